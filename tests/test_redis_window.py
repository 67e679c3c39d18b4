"""The history window kept beside the record in Redis: a ring; each step writes its changed rows."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import redis

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import FeedOutcome, SessionRecord, feed
from app.stores.base import Compute, SessionStore
from app.stores.record_codec import FORMAT, decode_record, encode_record
from app.stores.redis import RedisStore
from app.stores.redis_cluster import RedisClusterStore
from app.window_ring import RingWindow, changed_pieces, ring_bytes, ring_window, row_size
from forecast_core.arrays import FloatArray
from tests.helpers import window_rows

pytestmark = pytest.mark.anyio

HISTORY = 5
# Requests of one value or several: the ring wraps, and some requests change more rows at once.
REQUESTS: list[list[float]] = [[0.1], [0.2], [0.3, 0.4], [0.5]] + [[0.01 * i] for i in range(9)]
NOW = 1_000.0

MakeStore = Callable[[int], RedisStore | RedisClusterStore]


def window(step: int, rows: int, levels: int = 2) -> FloatArray:
    """A window whose every row says its step: value step, forecast step + 0.5, radii step / 4."""
    steps = np.arange(step + 2 - rows, step + 2, dtype=float)
    out = np.empty((rows, 2 + levels))
    out[:, 0], out[:, 1] = steps, steps + 0.5
    out[:, 2:] = (steps / 4)[:, None]
    out[-1, 0] = math.nan
    return out


def test_a_ring_gives_back_the_window_it_holds() -> None:
    held = window(40, 7)
    assert np.array_equal(ring_window(ring_bytes(held, 40, 9), 7, 4, 40), held, equal_nan=True)


@pytest.mark.parametrize("added", [1, 2, 5])
def test_the_changed_rows_make_the_same_ring_as_a_whole_write(added: int) -> None:
    slots, step = 9, 30
    old, new = window(step, 9), window(step + added, 9)
    ring = bytearray(ring_bytes(old, step, slots))
    pieces = changed_pieces(old, step, new, step + added, slots)
    assert pieces is not None and sum(len(data) for _, data in pieces) < len(ring)
    for offset, data in pieces:
        ring[offset : offset + len(data)] = data
    assert np.array_equal(ring_window(bytes(ring), 9, 4, step + added), new, equal_nan=True)


def test_an_older_row_that_changed_asks_for_a_whole_ring() -> None:
    old, new = window(30, 9), window(31, 9)
    new[2, 1] = 99.0
    assert changed_pieces(old, 30, new, 31, 9) is None


def test_a_window_wider_than_before_asks_for_a_whole_ring() -> None:
    assert changed_pieces(window(30, 9, levels=1), 30, window(31, 9), 31, 9) is None


def test_a_ring_too_short_for_its_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        ring_window(ring_bytes(window(30, 4), 30, 4), 6, 4, 30)


def feeding(
    forecaster: Forecaster, policy: IntervalPolicy, values: Sequence[float], history: int
) -> Compute[FeedOutcome]:
    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, policy, values, None, NOW, history=history)

    return compute


def fed_in_memory(
    forecaster: Forecaster, policy: IntervalPolicy, requests: list[list[float]], history: int
) -> SessionRecord:
    record: SessionRecord | None = None
    for values in requests:
        record, _ = feed(record, forecaster, policy, values, None, NOW, history=history)
    assert record is not None
    return record


def assert_holds_the_window_fed(
    read: SessionRecord | None,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    requests: list[list[float]],
    history: int,
) -> None:
    """``read`` is at the step, and holds the window, of a session fed ``requests`` in memory."""
    expected = fed_in_memory(forecaster, policy, requests, history)
    assert read is not None and read.step == expected.step
    assert np.array_equal(window_rows(read), window_rows(expected), equal_nan=True)


async def assert_a_larger_window_carries_on(
    small: SessionStore,
    large: SessionStore,
    reader: SessionStore,
    forecaster: Forecaster,
    policy: IntervalPolicy,
) -> None:
    """A session fed by a store keeping ``HISTORY`` values, then by one keeping more (a rollout
    that changes FORECAST_SESSION_HISTORY), holds what feeding it so in memory gives."""
    requests = REQUESTS[:6]
    for values in requests[:-1]:
        await small.apply("s", feeding(forecaster, policy, values, HISTORY))
    await large.get("s")  # a store that caches holds the session as the smaller one wrote it
    await large.apply("s", feeding(forecaster, policy, requests[-1], HISTORY + 3))
    read = await reader.get("s")
    previous = fed_in_memory(forecaster, policy, requests[:-1], HISTORY)
    expected, _ = feed(previous, forecaster, policy, requests[-1], None, NOW, history=HISTORY + 3)
    assert np.array_equal(window_rows(read), window_rows(expected), equal_nan=True)


@pytest.fixture(params=["redis", "redis-cluster"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Replicas over one Redis (or Redis Cluster), each keeping ``history`` values."""
    opened: list[RedisStore | RedisClusterStore] = []
    cluster = request.param == "redis-cluster"
    url = request.getfixturevalue("empty_redis_cluster" if cluster else "redis_server").url

    def make(history: int) -> RedisStore | RedisClusterStore:
        options = {"prefix": f"w-{tmp_path.name}", "ttl_s": 60, "max_sessions": 100}
        store: RedisStore | RedisClusterStore
        if cluster:
            store = RedisClusterStore(url, history=history, **options)  # type: ignore[arg-type]
        else:
            store = RedisStore(url, history=history, **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def test_a_window_read_back_is_the_window_fed(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    writer = make_store(HISTORY)
    for values in REQUESTS:
        await writer.apply("s", feeding(forecaster, policy, values, HISTORY))
    read = await make_store(HISTORY).get("s")  # another replica: nothing cached
    assert_holds_the_window_fed(read, forecaster, policy, REQUESTS, HISTORY)


async def test_steps_from_the_cache_write_into_the_ring_it_kept(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """A replica's cache keeps the window as the ring Redis holds, so the steps after a write
    push into its bytes too (nothing decoded), past the ring's wrap-around, and Redis holds
    the window fed."""
    writer = make_store(HISTORY)
    requests = [[0.1, 0.2, 0.3], *([0.05 * step] for step in range(3 * HISTORY))]
    for values in requests:
        await writer.apply("s", feeding(forecaster, policy, values, HISTORY))
    cached = writer.cached("s")
    assert cached is not None and isinstance(cached.history, RingWindow)
    read = await make_store(HISTORY).get("s")
    assert_holds_the_window_fed(read, forecaster, policy, requests, HISTORY)


async def test_a_step_writes_the_rows_it_changed_not_the_window(
    redis_server: object, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    url: str = redis_server.url  # type: ignore[attr-defined]
    store = RedisStore(url, prefix=f"rows-{tmp_path.name}", ttl_s=60, max_sessions=10, history=64)
    client = redis.Redis.from_url(url)
    try:
        await store.apply("s", feeding(forecaster, policy, [0.1] * 64, 64))
        ring_key = f"rows-{tmp_path.name}:w:s"
        whole = client.strlen(ring_key)
        before = client.info("commandstats").get("cmdstat_setrange", {}).get("calls", 0)
        await store.apply("s", feeding(forecaster, policy, [0.2], 64))
        after = client.info("commandstats")["cmdstat_setrange"]["calls"]
        assert after - before == 2  # the value into the pending row, the new pending row
        assert client.strlen(ring_key) == whole
    finally:
        client.close()
        await store.close()


async def test_replicas_keeping_other_window_sizes_rewrite_the_ring_whole(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """During a rollout that changes FORECAST_SESSION_HISTORY: rows of a ring of another size
    would land in the wrong slots; the script refuses them and the replica writes it whole."""
    small, large = make_store(HISTORY), make_store(HISTORY + 3)
    await assert_a_larger_window_carries_on(
        small, large, make_store(HISTORY + 3), forecaster, policy
    )


async def test_a_record_that_kept_its_window_inside_is_read_and_carried_on(
    redis_server: object, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """Sessions written before the window moved beside the record (format 4) keep theirs."""
    url: str = redis_server.url  # type: ignore[attr-defined]
    prefix = f"old-{tmp_path.name}"
    old = fed_in_memory(forecaster, policy, REQUESTS[:4], HISTORY).with_revision(7)
    data = encode_record(old)
    assert data[0] == FORMAT and decode_record(data).history is not None
    client = redis.Redis.from_url(url)
    client.hset(f"{prefix}:s:s", mapping={"rev": 7, "rec": data})
    client.close()
    store = RedisStore(url, prefix=prefix, ttl_s=60, max_sessions=10, history=HISTORY)
    reader = RedisStore(url, prefix=prefix, ttl_s=60, max_sessions=10, history=HISTORY)
    try:
        read = await store.get("s")
        assert np.array_equal(window_rows(read), window_rows(old), equal_nan=True)
        await store.apply("s", feeding(forecaster, policy, REQUESTS[4], HISTORY))
        after = await reader.get("s")
        assert_holds_the_window_fed(after, forecaster, policy, REQUESTS[:5], HISTORY)
    finally:
        await store.close()
        await reader.close()


async def test_a_deleted_session_leaves_no_window_behind(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = make_store(HISTORY)
    await store.apply("s", feeding(forecaster, policy, [0.1, 0.2], HISTORY))
    assert await store.delete("s")
    assert await store.count() == 0
    await store.apply("s", feeding(forecaster, policy, [0.3], HISTORY))
    read = await make_store(HISTORY).get("s")
    assert read is not None and read.history is not None and read.history.shape == (2, 4)


async def test_a_young_session_keeps_a_ring_its_size_not_a_full_windows(
    redis_server: object, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """A million sessions after their first value must not each hold room for 256 values."""
    url: str = redis_server.url  # type: ignore[attr-defined]
    prefix = f"young-{tmp_path.name}"
    store = RedisStore(url, prefix=prefix, ttl_s=60, max_sessions=10, history=256)
    client = redis.Redis.from_url(url)
    try:
        await store.apply("s", feeding(forecaster, policy, [0.1], 256))
        row = row_size(4)
        assert client.strlen(f"{prefix}:w:s") == 2 * row
        for value in [0.2, 0.3, 0.4]:
            await store.apply("s", feeding(forecaster, policy, [value], 256))
        assert client.strlen(f"{prefix}:w:s") == 8 * row  # grown by doubling: 5 rows in 8
    finally:
        client.close()
        await store.close()
