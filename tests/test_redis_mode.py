"""Which Redis store the URL gets: asked of the node, and asked again while it cannot answer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.errors import StoreUnavailable
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import SessionRecord, feed
from app.settings import Settings
from app.stores.base import FeedsInPlace
from app.stores.factory import open_store
from app.stores.redis import RedisStore
from bench.local import RedisServer

pytestmark = pytest.mark.anyio


async def test_a_single_node_gets_the_single_node_store_and_says_so(
    redis_server: RedisServer, tutorial_models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="redis", redis_url=redis_server.url)
    with caplog.at_level(logging.INFO, logger="app.stores.redis_mode"):
        store = await open_store(settings, clock=lambda: 0.0)
    await store.close()
    assert isinstance(store, RedisStore)
    assert "session store: a single Redis node at redis://127.0.0.1:" in caplog.text


async def test_redis_down_at_start_up_gives_503_until_it_answers(
    tutorial_models_dir: Path, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)  # its port chosen, nothing listening yet
    settings = Settings(model_dir=tutorial_models_dir, store="redis", redis_url=redis.url)
    store = await open_store(settings, clock=lambda: 0.0)
    try:
        with pytest.raises(StoreUnavailable, match="Redis session store at redis://127.0.0.1"):
            await store.ping()
        redis.start()
        await store.ping()
        assert await store.count() == 0
    finally:
        await store.close()
        redis.stop()


async def test_a_store_opened_while_redis_was_down_steps_sessions_in_place_once_it_answers(
    tutorial_models_dir: Path, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    redis = RedisServer(tmp_path)
    settings = Settings(model_dir=tutorial_models_dir, store="redis", redis_url=redis.url)
    store = await open_store(settings, clock=lambda: 0.0)
    history = settings.session_history

    def created(_old: SessionRecord | None) -> tuple[SessionRecord | None, None]:
        record, _ = feed(None, forecaster, policy, [0.3], None, 0.0, history=history)
        return record, None

    try:
        assert isinstance(store, FeedsInPlace)  # the routes decide on it once, at start-up
        redis.start()
        await store.apply("k", created)  # this replica's view of the session: a row next
        stepped = await store.feed_in_place(["k"], [0.1], [None], forecaster, policy, history, 0.0)
        assert stepped.indexes == [0]
    finally:
        await store.close()
        redis.stop()
