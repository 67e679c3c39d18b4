"""The single-node Redis store's ``apply_many``: every session's compare-and-set in one script
call, each answered as its own call would be; and commands packed by hiredis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import hiredis
import numpy as np
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from app.errors import SessionLimitReached, SessionQuotaReached
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import SessionRecord, feed
from app.stores.redis import RedisStore
from app.stores.redis_packing import JOINED_ABOVE, HiredisPacking, packing_in_c
from bench.local import RedisServer
from tests.helpers import redis_command_calls, window_rows
from tests.test_apply_many import feeding, steps
from tests.test_redis_window import HISTORY, NOW, REQUESTS
from tests.test_redis_window import feeding as windowed

pytestmark = pytest.mark.anyio

MakeStore = Callable[..., RedisStore]


@pytest.fixture
async def make_store(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Stores over one key prefix of the test session's Redis (two of them: two replicas)."""
    opened: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        store = RedisStore(redis_server.url, prefix=f"batch-{tmp_path.name}", ttl_s=60, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def feed_all(
    store: RedisStore, keys: list[str], value: float, forecaster: Forecaster, policy: IntervalPolicy
) -> list[Any]:
    return await store.apply_many([(key, feeding(forecaster, policy, value)) for key in keys])


async def evalsha_calls(url: str) -> int:
    return await redis_command_calls(url, "evalsha")


async def test_the_sessions_of_a_batch_are_written_in_one_call(
    make_store: MakeStore,
    redis_server: RedisServer,
    forecaster: Forecaster,
    policy: IntervalPolicy,
) -> None:
    store, keys = make_store(max_sessions=100), ["ns/a", "ns/b", "ns/c"]
    await feed_all(store, keys, 0.0, forecaster, policy)
    before = await evalsha_calls(redis_server.url)
    results = await feed_all(store, keys, 0.1, forecaster, policy)
    assert steps(results) == [2, 2, 2]
    assert await evalsha_calls(redis_server.url) == before + 1  # cached: no read either
    other = make_store(max_sessions=100)  # another replica reads what Redis holds
    assert [(await other.get(key)).step for key in keys] == [2, 2, 2]  # type: ignore[union-attr]


async def test_a_batch_after_redis_lost_its_scripts_is_written(
    make_store: MakeStore,
    redis_server: RedisServer,
    forecaster: Forecaster,
    policy: IntervalPolicy,
) -> None:
    store, keys = make_store(max_sessions=100), ["ns/a", "ns/b"]
    await feed_all(store, keys, 0.0, forecaster, policy)
    client = Redis.from_url(redis_server.url)
    try:
        await client.script_flush()  # as a restarted Redis has no scripts
    finally:
        await client.aclose()
    results = await feed_all(store, keys, 0.1, forecaster, policy)
    assert steps(results) == [2, 2]
    client = Redis.from_url(redis_server.url)
    try:  # loaded again by the batch itself, not left to each session's own path
        assert await client.script_exists(store._compare_and_set_many.sha) == [True]
    finally:
        await client.aclose()


async def test_a_batch_larger_than_one_script_call_takes_is_written_whole(
    make_store: MakeStore,
    redis_server: RedisServer,
    forecaster: Forecaster,
    policy: IntervalPolicy,
) -> None:
    store, keys = make_store(max_sessions=1_000), [f"ns/s{index}" for index in range(300)]
    await feed_all(store, keys, 0.0, forecaster, policy)
    before = await evalsha_calls(redis_server.url)
    results = await feed_all(store, keys, 0.1, forecaster, policy)
    assert set(steps(results)) == {2}
    assert await evalsha_calls(redis_server.url) == before + 3  # 128, 128 and 44 sessions


async def test_calls_of_a_batch_that_found_no_script_alone_are_sent_again(
    make_store: MakeStore,
    redis_server: RedisServer,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The script cache emptied between two calls of one batch (as by a restart): the first call
    wrote its sessions; only the calls that ran nothing are sent again, so no step is applied
    twice."""
    store, keys = make_store(max_sessions=1_000), [f"ns/s{index}" for index in range(300)]
    await feed_all(store, keys, 0.0, forecaster, policy)
    send = store._evalsha_each
    flushed = False

    async def flush_after_the_first_call(script: Any, commands: list[Any]) -> list[Any]:
        nonlocal flushed
        if flushed or len(commands) < 2:
            return await send(script, commands)
        flushed = True
        first = await send(script, commands[:1])
        client = Redis.from_url(redis_server.url)
        try:
            await client.script_flush()
        finally:
            await client.aclose()
        return first + await send(script, commands[1:])

    monkeypatch.setattr(store, "_evalsha_each", flush_after_the_first_call)
    results = await feed_all(store, keys, 0.1, forecaster, policy)
    assert flushed
    assert set(steps(results)) == {2}
    reader = make_store(max_sessions=1_000)
    assert {(await reader.get(key)).step for key in keys} == {2}  # type: ignore[union-attr]


async def test_a_new_session_over_the_cap_is_refused_alone_in_its_batch(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = make_store(max_sessions=2)
    await store.apply("ns/a", feeding(forecaster, policy, 0.0))
    results = await store.apply_many(
        [(key, feeding(forecaster, policy, 0.1)) for key in ("ns/a", "ns/b", "ns/c")]
    )
    assert steps(results) == [2, 1, "session_limit_reached"]
    assert isinstance(results[2], SessionLimitReached)
    assert await store.count() == 2


async def test_a_new_session_over_its_keys_quota_is_refused_alone_in_its_batch(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = make_store(max_sessions=100, quotas=lambda namespace: 1 if namespace == "few" else 0)
    results = await store.apply_many(
        [(key, feeding(forecaster, policy, 0.1)) for key in ("few/a", "many/a", "few/b")]
    )
    assert steps(results) == [1, 1, "session_quota_reached"]
    assert isinstance(results[2], SessionQuotaReached)
    assert await store.namespace_counts() == {"few": 1, "many": 1}


async def test_rings_of_another_size_in_a_batch_are_rewritten_whole(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """During a rollout that changes FORECAST_SESSION_HISTORY, a batch's rows for rings of
    another size are refused by the script (nothing written) and those sessions written whole."""
    small = make_store(max_sessions=100, history=HISTORY)
    large = make_store(max_sessions=100, history=HISTORY + 3)
    keys = ["ns/a", "ns/b"]
    for values in REQUESTS[:5]:
        await small.apply_many(
            [(key, windowed(forecaster, policy, values, HISTORY)) for key in keys]
        )
    for key in keys:
        await large.get(key)  # cached as the smaller replica wrote it
    results = await large.apply_many(
        [(key, windowed(forecaster, policy, REQUESTS[5], HISTORY + 3)) for key in keys]
    )
    assert steps(results) == [7, 7]
    expected: SessionRecord | None = None
    for values in REQUESTS[:5]:
        expected, _ = feed(expected, forecaster, policy, values, None, NOW, history=HISTORY)
    expected, _ = feed(expected, forecaster, policy, REQUESTS[5], None, NOW, history=HISTORY + 3)
    reader = make_store(max_sessions=100, history=HISTORY + 3)
    for key in keys:
        read = await reader.get(key)
        assert np.array_equal(window_rows(read), window_rows(expected), equal_nan=True)


class _Buffer(bytearray):
    """A bytearray of another class: redis-py's packer takes it as a bytearray."""


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "f" * 40, 2, "a:s:ns/x", "a:w:ns/x", 0, b"\x00\xff" * 90, "1.5e-07"),
        ("SET", "k", 0.1, 1e300, -0.0, 12345678901234567890, "é"),
        ("SETRANGE", "k", 4096, memoryview(b"ab"), bytearray(b"cd")),
        ("CLIENT SETNAME", "replica-1"),
        ("EVALSHA", "f" * 40, 1, "a:s:x", b"r" * 2000, "R", 8256, b"w" * 36, b"v" * 513, 7),
        ("SET", "k", b"\x00" * 4096),
        ("SET", b"\x01" * 600, b"\x02" * 600, b"\x03" * 512),
        ("SETRANGE", "k", 0, memoryview(b"m" * 1000)),
        ("FT.SEARCH", "index", b"q" * 700),
        ("SET", "k", _Buffer(b"x" * 600)),
    ],
    ids=[
        "script-call",
        "numbers-and-text",
        "buffers",
        "two-word-command",
        "long-arguments-amid",
        "long-argument-last",
        "long-arguments-only",
        "long-buffer",
        "dotted-command",
        "bytearray-subclass",
    ],
)
def test_hiredis_packs_the_bytes_redis_py_packs(args: tuple[Any, ...]) -> None:
    ours = packing_in_c(Connection)().pack_command(*args)
    theirs = Connection().pack_command(*args)
    assert b"".join(ours) == b"".join(theirs)


@pytest.mark.parametrize("value", [None, True, object()], ids=["none", "bool", "object"])
def test_hiredis_packing_refuses_what_redis_py_refuses_with_its_error(value: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", value)
    with pytest.raises(DataError):
        packing_in_c(Connection)().pack_command("SET", "k", value)


def test_long_arguments_are_joined_in_not_packed_by_hiredis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed: list[tuple[Any, ...]] = []
    pack = hiredis.pack_command

    def spying(args: tuple[Any, ...]) -> bytes:
        handed.append(args)
        packed: bytes = pack(args)
        return packed

    monkeypatch.setattr(hiredis, "pack_command", spying)
    record = b"r" * (JOINED_ABOVE + 1)
    packing_in_c(Connection)().pack_command("EVALSHA", "f" * 40, 1, "k", record, 7)
    assert handed and all(record not in args for args in handed)


@pytest.mark.parametrize(
    ("url", "chosen"),
    [
        ("redis://127.0.0.1:1/0", Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
    ids=["tcp", "tls", "unix-socket"],
)
def test_the_store_packs_in_c_over_the_connection_the_url_chose(
    url: str, chosen: type[Connection]
) -> None:
    store = RedisStore(url, prefix="p", ttl_s=60, max_sessions=1)
    connection_class = store._client.connection_pool.connection_class
    assert issubclass(connection_class, chosen)
    assert issubclass(connection_class, HiredisPacking)
