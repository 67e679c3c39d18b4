"""The Redis store's sessions stepped in place (RedisStore.feed_in_place): rows of this replica,
each step written by the compare-and-set script; Redis stays the truth another replica reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.exceptions import ConnectionError as RedisConnectionError

from app.errors import StoreUnavailable
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.main import create_app
from app.settings import Settings
from app.stores.redis import RedisStore
from bench.local import RedisServer, SwitchableModels
from tests.helpers import Twin, assert_same_record, comparable_record, redis_command_calls

pytestmark = pytest.mark.anyio

HISTORY = 5
NOW = 1_000.0
KEY = "ns/k"

MakeStore = Callable[..., RedisStore]


@pytest.fixture
async def make_store(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Stores over one key prefix of the test session's Redis (two of them: two replicas)."""
    opened: list[RedisStore] = []

    def make(url: str = redis_server.url, **options: Any) -> RedisStore:
        options = {"ttl_s": 60, "max_sessions": 100, "history": HISTORY, **options}
        store = RedisStore(url, prefix=f"rows-{tmp_path.name}", clock=lambda: NOW, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
def twin(forecaster: Forecaster, policy: IntervalPolicy) -> Twin:
    return Twin(forecaster, policy, history=HISTORY, now=NOW)


async def test_rows_step_as_records_do_and_another_replica_reads_them(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store, reader, twin = (
        make_store(),
        make_store(),
        Twin(forecaster, policy, history=HISTORY, now=NOW),
    )
    await store.apply(KEY, twin.compute(0.3))  # created by the record path: cached
    twin.feed(0.3)
    for index in range(3 * HISTORY):  # the window fills, then wraps
        value = 0.05 * index
        expected = twin.feed(value)
        stepped = await store.feed_in_place(
            [KEY], [value], [None], forecaster, policy, HISTORY, NOW
        )
        assert stepped.indexes == [0]
        assert stepped.predictions == [expected.predictions[-1]]
        assert stepped.steps == [expected.step]
        assert_same_record(comparable_record(await reader.get(KEY)), comparable_record(twin.record))
    assert store.rows_in_use() == 1


async def test_a_full_window_writes_the_two_rows_of_its_step(
    make_store: MakeStore, twin: Twin, redis_server: RedisServer
) -> None:
    store = make_store()
    await store.apply(KEY, twin.compute(0.3))
    for value in [0.1] * (HISTORY + 2):  # a full window
        assert await twin.feed_in_place(store, KEY, value) == [0]
    before = await redis_command_calls(redis_server.url, "setrange")
    assert await twin.feed_in_place(store, KEY, 0.2) == [0]
    assert await redis_command_calls(redis_server.url, "setrange") - before == 2


async def test_a_session_another_replica_stepped_takes_the_record_path(
    make_store: MakeStore, twin: Twin
) -> None:
    mine, other = make_store(), make_store()
    await twin.step(mine, KEY, 0.3)
    assert await twin.feed_in_place(mine, KEY, 0.4) == [0]
    twin.feed(0.4)
    await twin.step(other, KEY, 0.5)
    # Its compare-and-set fails: left out (not applied), and no longer a row.
    assert await twin.feed_in_place(mine, KEY, 0.6) == []
    assert mine.rows_in_use() == 0
    await mine.apply(KEY, twin.compute(0.6))  # the record path, from what Redis answered
    twin.feed(0.6)
    assert_same_record(comparable_record(await other.get(KEY)), comparable_record(twin.record))


async def test_a_session_the_replica_has_not_served_is_left_to_the_record_path(
    make_store: MakeStore, twin: Twin
) -> None:
    mine, other = make_store(), make_store()
    await other.apply(KEY, twin.compute(0.3))
    assert await twin.feed_in_place(mine, KEY, 0.4) == []
    await mine.apply(KEY, twin.compute(0.4))  # read, written: now cached
    assert await twin.feed_in_place(mine, KEY, 0.5) == [0]


async def test_a_session_stepped_in_place_is_a_row_not_a_cached_record(
    make_store: MakeStore, twin: Twin
) -> None:
    store = make_store()
    await store.apply(KEY, twin.compute(0.3))
    assert store.cached(KEY) is not None
    assert await twin.feed_in_place(store, KEY, 0.4) == [0]
    assert store.cached(KEY) is None  # a stale record would cost the record path a retry


async def test_a_step_not_the_sessions_own_is_left_to_the_record_path(
    make_store: MakeStore, twin: Twin
) -> None:
    store = make_store()
    await store.apply(KEY, twin.compute(0.3))
    assert await twin.feed_in_place(store, KEY, 0.4, step=1) == [0]
    assert await twin.feed_in_place(store, KEY, 0.5, step=1) == []  # a resend: the record path
    assert await twin.feed_in_place(store, KEY, 0.5, step=2) == [0]


async def test_a_record_path_read_ends_the_row(make_store: MakeStore, twin: Twin) -> None:
    store = make_store()
    await twin.step(store, KEY, 0.3)
    assert await twin.feed_in_place(store, KEY, 0.4) == [0]
    twin.feed(0.4)
    await store.get(KEY)
    assert store.rows_in_use() == 0
    await twin.step(store, KEY, 0.5)
    assert_same_record(comparable_record(await store.get(KEY)), comparable_record(twin.record))


async def test_a_deleted_session_is_not_stepped_again(make_store: MakeStore, twin: Twin) -> None:
    store = make_store()
    await store.apply(KEY, twin.compute(0.3))
    assert await twin.feed_in_place(store, KEY, 0.4) == [0]
    assert await store.delete(KEY)
    assert store.rows_in_use() == 0
    assert await twin.feed_in_place(store, KEY, 0.5) == []
    assert await store.get(KEY) is None


async def test_with_min_replicas_every_session_takes_the_record_path(
    make_store: MakeStore, twin: Twin
) -> None:
    plain, confirming = make_store(), make_store(min_replicas=1)
    await plain.apply(KEY, twin.compute(0.3))
    confirming._cache.remember(KEY, await plain.get(KEY))
    assert await twin.feed_in_place(confirming, KEY, 0.4) == []


async def test_an_unreachable_redis_fails_the_feed_and_drops_its_rows(
    make_store: MakeStore, twin: Twin, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path, durable=False)
    server.start()
    try:
        store = make_store(server.url)
        await store.apply(KEY, twin.compute(0.3))
        assert await twin.feed_in_place(store, KEY, 0.4) == [0]
        server.stop()
        with pytest.raises(StoreUnavailable):
            await twin.feed_in_place(store, KEY, 0.5)
        assert store.rows_in_use() == 0
    finally:
        server.stop()


async def test_a_row_whose_write_could_not_be_built_is_dropped(
    make_store: MakeStore,
    twin: Twin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = make_store()
    await twin.step(store, KEY, 0.3)

    def broken(*_args: object) -> list[list[Any]]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "_rows_args", broken)
    with pytest.raises(RuntimeError):
        await twin.feed_in_place(store, KEY, 0.4)
    monkeypatch.undo()
    assert store.rows_in_use() == 0  # stepped in memory, never written: not trusted
    await twin.step(store, KEY, 0.5)
    assert_same_record(comparable_record(await store.get(KEY)), comparable_record(twin.record))


async def test_a_ring_of_another_size_is_written_whole_when_made_a_row(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    longer, store = make_store(history=HISTORY + 3), make_store()
    for value in [0.1] * (HISTORY + 5):  # a full window of the longer history: a larger ring
        await longer.apply(KEY, Twin(forecaster, policy, history=HISTORY, now=NOW).compute(value))
    twin = Twin(forecaster, policy, history=HISTORY, now=NOW)
    await store.apply(KEY, twin.compute(0.2))  # its window cut to this store's, in that ring
    assert await twin.feed_in_place(store, KEY, 0.3) == [0]
    assert await twin.feed_in_place(store, KEY, 0.4) == [0]


async def test_a_model_whose_write_failed_refuses_only_its_items(
    tmp_path: Path,
    tutorial_models_dir: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each model's sessions are written by a pipeline of their own: when the second fails, the
    first's items are answered as applied, the others refused (a resend without steps would
    otherwise apply the first ones twice)."""
    root = tmp_path / "models"
    for name in ("default", "alpha", "beta"):
        models = SwitchableModels(root, None if name == "default" else name)
        models.point_at(models.add(tutorial_models_dir / "latest"))
    history = Settings.model_fields["session_history"].default
    store = RedisStore(
        redis_server.url,
        prefix=f"models-{tmp_path.name}",
        ttl_s=60,
        max_sessions=10,
        history=history,
    )
    settings = Settings(model_dir=root, store="redis", redis_url=redis_server.url)
    items = [
        {"session_id": "a", "value": 0.1, "model": "alpha"},
        {"session_id": "b", "value": 0.2, "model": "beta"},
    ]
    send = store._send_scripted
    sent = 0

    async def the_second_fails(calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        nonlocal sent
        sent += 1
        if sent == 2:
            raise RedisConnectionError("Connection reset by peer")
        return await send(calls)

    try:
        async with LifespanManager(create_app(settings, store=store), startup_timeout=120) as app:
            transport = httpx.ASGITransport(app=app.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                for _ in range(2):  # created, then rows
                    await client.post("/predict/many", json={"items": items})
                assert store.rows_in_use() == 2
                monkeypatch.setattr(store, "_send_scripted", the_second_fails)
                response = await client.post("/predict/many", json={"items": items})
                applied, refused = response.json()["results"]
                assert applied["step"] == 3
                assert refused["error"]["code"] == "store_unavailable"
                monkeypatch.undo()
                for session, model, step in (("a", "alpha", 3), ("b", "beta", 2)):
                    found = await client.get(f"/sessions/{session}", params={"model": model})
                    assert found.json()["step"] == step
    finally:
        await store.close()
