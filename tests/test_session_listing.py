"""GET /sessions: the caller's sessions a page at a time, in every store."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.errors import InvalidCursor
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.services import ModelSlot
from app.session_rules import FeedOutcome, SessionRecord, feed
from app.settings import Settings
from app.stores.base import SessionStore
from app.stores.memory import MemoryStore
from app.stores.redis import RedisStore
from app.stores.redis_cluster import RedisClusterStore
from app.stores.sqlite import SqliteStore
from bench.local import RedisCluster, RedisServer
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio
NO_INTERVALS = IntervalPolicy.build(None, (), rate=0.05, window=50)
_prefixes = itertools.count()


def _redis_url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return cluster.url


async def _open(kind: str, tmp_path: Path, redis: Callable[[], str]) -> SessionStore:
    if kind == "memory":
        return MemoryStore(ttl_s=60, max_sessions=1000)
    if kind == "sqlite":
        return await SqliteStore.open(tmp_path / "s.db", ttl_s=60, max_sessions=1000)
    prefix = f"list{next(_prefixes)}"
    if kind == "redis":
        return RedisStore(redis(), prefix=prefix, ttl_s=60, max_sessions=1000)
    return RedisClusterStore(redis(), prefix=prefix, ttl_s=60, max_sessions=1000)


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, SessionStore]]:
    kind: str = request.param
    opened = await _open(kind, tmp_path, lambda: _redis_url(kind, request))
    try:
        yield kind, opened
    finally:
        await opened.close()


async def _create(store: SessionStore, forecaster: Forecaster, keys: list[str]) -> None:
    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, NO_INTERVALS, [0.5], None, time.time())

    for key in keys:
        await store.apply(key, compute)


async def _walk(store: SessionStore, prefix: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page, cursor = await store.list_page(prefix, cursor, limit)
        assert len(page) <= limit
        pages.append([key for key, _ in page])
        if cursor is None:
            return pages


async def test_pages_cover_every_session_of_the_namespace_and_no_other(
    store: tuple[str, SessionStore], forecaster: Forecaster
) -> None:
    kind, sessions = store
    mine = [f"ns1/s{i:02d}" for i in range(23)]
    await _create(sessions, forecaster, [*mine, "ns2/s00", "ns10/s00", "ns1x/s00"])

    pages = await _walk(sessions, "ns1/", limit=5)

    shown = [key for page in pages for key in page]
    if kind.startswith("redis"):
        assert set(shown) == set(mine)  # SCAN may show a session twice, never miss one
    else:
        assert shown == sorted(mine)  # key order, each once


async def test_a_page_holds_the_sessions_records(
    store: tuple[str, SessionStore], forecaster: Forecaster
) -> None:
    _, sessions = store
    await _create(sessions, forecaster, ["ns3/a"])
    page, cursor = await sessions.list_page("ns3/", None, 10)
    assert [(key, record.step) for key, record in page] == [("ns3/a", 1)]
    assert cursor is None


async def test_an_empty_namespace_is_one_empty_page(store: tuple[str, SessionStore]) -> None:
    _, sessions = store
    assert await sessions.list_page("nobody/", None, 10) == ([], None)


# Memory and SQLite cursors are keys: any text is a place in key order.
@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_a_cursor_not_given_by_a_redis_store_is_refused(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sessions = await _open(kind, tmp_path, lambda: _redis_url(kind, request))
    try:
        with pytest.raises(InvalidCursor):
            await sessions.list_page("ns/", "not-a-cursor", 10)
    finally:
        await sessions.close()


async def test_the_api_lists_only_the_callers_sessions(
    tmp_path: Path, tutorial_model: ModelSlot
) -> None:
    settings = Settings(model_dir=tmp_path, store="memory", api_keys="k1,k2")
    async with asgi_client(settings, model=tutorial_model) as client:
        for key, session in (("k1", "mine-1"), ("k1", "mine-2"), ("k2", "theirs")):
            response = await client.post(
                "/predict",
                json={"session_id": session, "value": 0.3},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200
        listed = await client.get("/sessions", headers={"Authorization": "Bearer k1"})
    assert listed.status_code == 200
    body = listed.json()
    assert [s["session_id"] for s in body["sessions"]] == ["mine-1", "mine-2"]
    assert body["next_cursor"] is None


async def test_the_api_pages_with_next_cursor(tmp_path: Path, tutorial_model: ModelSlot) -> None:
    settings = Settings(model_dir=tmp_path, store="memory")
    async with asgi_client(settings, model=tutorial_model) as client:
        for session in ("a", "b", "c"):
            await client.post("/predict", json={"session_id": session, "value": 0.3})
        first = (await client.get("/sessions", params={"limit": 2})).json()
        second = (
            await client.get("/sessions", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
    assert [s["session_id"] for s in first["sessions"]] == ["a", "b"]
    assert [s["session_id"] for s in second["sessions"]] == ["c"]
    assert second["next_cursor"] is None


async def test_a_page_size_over_the_limit_is_a_clear_422(
    tmp_path: Path, tutorial_model: ModelSlot
) -> None:
    settings = Settings(model_dir=tmp_path, store="memory")
    async with asgi_client(settings, model=tutorial_model) as client:
        response = await client.get("/sessions", params={"limit": 100_000})
    assert response.status_code == 422
    assert "limit" in response.json()["error"]["message"]
