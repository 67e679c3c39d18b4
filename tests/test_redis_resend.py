"""A compare-and-set whose answer was lost is sent again by redis-py (client_options' retry) and
runs a second time: its write token makes that run answer the write it made, so the step is
applied once, never computed and written again as if it had lost a race."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import SessionRecord
from app.stores.redis import RedisStore
from app.stores.redis_cluster import RedisClusterStore
from app.stores.redis_common import WRITTEN_BEFORE_CHANGED
from bench.local import RedisCluster, RedisServer
from tests.answer_dropping_proxy import AnswerDroppingProxy
from tests.helpers import Twin, assert_same_record, comparable_record, redis_command_calls

pytestmark = pytest.mark.anyio

HISTORY = 5
NOW = 1_000.0
KEY = "ns/k"
OTHER_KEY = "ns/other"

ScriptStore = RedisStore | RedisClusterStore


@pytest.fixture
def twin(forecaster: Forecaster, policy: IntervalPolicy) -> Twin:
    return Twin(forecaster, policy, history=HISTORY, now=NOW)


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[AnswerDroppingProxy]:
    async with AnswerDroppingProxy(redis_server.port) as started:
        yield started


@pytest.fixture
async def stores(
    redis_server: RedisServer, proxy: AnswerDroppingProxy, tmp_path: Path
) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """A replica whose answers may be lost (through the proxy), and another reaching Redis
    directly, over one key prefix."""
    options: dict[str, Any] = {"ttl_s": 60, "max_sessions": 100, "history": HISTORY}
    prefix = f"resend-{tmp_path.name}"
    lossy = RedisStore(proxy.url, prefix=prefix, clock=lambda: NOW, **options)
    direct = RedisStore(redis_server.url, prefix=prefix, clock=lambda: NOW, **options)
    yield lossy, direct
    await lossy.close()
    await direct.close()


async def test_a_step_whose_answer_was_lost_is_applied_once(
    stores: tuple[RedisStore, RedisStore],
    proxy: AnswerDroppingProxy,
    twin: Twin,
) -> None:
    lossy, direct = stores
    await twin.step(lossy, KEY, 0.3)
    proxy.drop_next_script_answer()
    answer = await lossy.apply(KEY, twin.compute(0.4))
    expected = twin.feed(0.4)
    assert proxy.dropped == 1
    assert answer.step == expected.step == 2
    assert_same_record(comparable_record(await direct.get(KEY)), comparable_record(twin.record))


async def test_the_steps_of_many_sessions_whose_answers_were_lost_are_applied_once(
    stores: tuple[RedisStore, RedisStore],
    proxy: AnswerDroppingProxy,
    forecaster: Forecaster,
    policy: IntervalPolicy,
) -> None:
    lossy, direct = stores
    twins = {key: Twin(forecaster, policy, history=HISTORY, now=NOW) for key in (KEY, OTHER_KEY)}
    await lossy.apply_many([(key, twin.compute(0.3)) for key, twin in twins.items()])
    proxy.drop_next_script_answer()
    await lossy.apply_many([(key, twin.compute(0.4)) for key, twin in twins.items()])
    assert proxy.dropped == 1
    for key, twin in twins.items():
        twin.feed(0.3)
        twin.feed(0.4)
        assert_same_record(comparable_record(await direct.get(key)), comparable_record(twin.record))


async def test_a_row_stepped_in_place_whose_answer_was_lost_is_applied_once(
    stores: tuple[RedisStore, RedisStore],
    proxy: AnswerDroppingProxy,
    twin: Twin,
) -> None:
    lossy, direct = stores
    await twin.step(lossy, KEY, 0.3, 0.4)  # created by the record path, then a row
    proxy.drop_next_script_answer()
    applied = await twin.feed_in_place(lossy, KEY, 0.5)
    twin.feed(0.5)
    assert proxy.dropped == 1
    assert applied == [0]  # applied: the caller does not apply it again
    assert_same_record(comparable_record(await direct.get(KEY)), comparable_record(twin.record))


async def test_a_lost_answer_after_which_another_replica_wrote_is_still_the_step_applied(
    stores: tuple[RedisStore, RedisStore],
    proxy: AnswerDroppingProxy,
    twin: Twin,
) -> None:
    lossy, direct = stores
    await twin.step(lossy, KEY, 0.3)

    async def another_replica_steps() -> None:
        await direct.apply(KEY, twin.compute(0.5))

    proxy.drop_next_script_answer(another_replica_steps)
    answer = await lossy.apply(KEY, twin.compute(0.4))
    assert proxy.dropped == 1
    assert answer.step == twin.feed(0.4).step == 2
    twin.feed(0.5)
    assert_same_record(comparable_record(await direct.get(KEY)), comparable_record(twin.record))
    # That replica's cache holds what Redis answered: its next step needs no read to succeed.
    assert_same_record(comparable_record(lossy.cached(KEY)), comparable_record(twin.record))


async def test_a_row_whose_lost_write_another_replica_followed_is_applied_and_dropped(
    stores: tuple[RedisStore, RedisStore],
    proxy: AnswerDroppingProxy,
    twin: Twin,
) -> None:
    lossy, direct = stores
    await twin.step(lossy, KEY, 0.3, 0.4)

    async def another_replica_steps() -> None:
        await direct.apply(KEY, twin.compute(0.6))

    proxy.drop_next_script_answer(another_replica_steps)
    applied = await twin.feed_in_place(lossy, KEY, 0.5)
    assert applied == [0]
    assert lossy.rows_in_use() == 0  # the row is behind Redis now: the record path goes on
    twin.feed(0.5)
    twin.feed(0.6)
    assert_same_record(comparable_record(await direct.get(KEY)), comparable_record(twin.record))


# -- the scripts themselves, on a single node and on a cluster ----------------------------------


class ResentScript:
    """A store's compare-and-set script as redis-py runs it when the first answer is lost: the
    same call twice, ``meanwhile`` between the two; the second run's answer."""

    def __init__(self, script: Any, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._script, self._meanwhile = script, meanwhile

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        await self._script(keys=keys, args=args)
        await self._meanwhile()
        return await self._script(keys=keys, args=args)


async def nothing() -> None:
    return None


@pytest.fixture(params=["redis", "cluster"])
async def script_stores(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[ScriptStore, ScriptStore]]:
    """Two replicas of one store kind over one key prefix."""
    options: dict[str, Any] = {"ttl_s": 60, "max_sessions": 100, "history": HISTORY}
    prefix = f"resent-{tmp_path.name}"
    if request.param == "redis":
        made: list[ScriptStore] = [
            RedisStore(redis_server.url, prefix=prefix, clock=lambda: NOW, **options)
            for _ in range(2)
        ]
    else:
        cluster: RedisCluster = request.getfixturevalue("empty_redis_cluster")
        made = [RedisClusterStore(cluster.url, prefix=prefix, **options) for _ in range(2)]
    yield made[0], made[1]
    for store in made:
        await store.close()


async def test_a_resent_compare_and_set_answers_its_own_write(
    script_stores: tuple[ScriptStore, ScriptStore],
    twin: Twin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, reader = script_stores
    await twin.step(store, KEY, 0.3)
    monkeypatch.setattr(
        store, "_compare_and_set_script", ResentScript(store._compare_and_set_script, nothing)
    )
    expected = await store.read(KEY)
    new = twin.next_record(0.4, expected)
    assert (await store.write_if_unchanged(KEY, expected, new))[0]
    twin.feed(0.4)
    assert_same_record(comparable_record(await reader.get(KEY)), comparable_record(twin.record))


OTHER_VALUES = (0.5, 0.6, 0.7, 0.8)


async def resend_after_other_writes(
    store: ScriptStore, other: ScriptStore, twin: Twin, writes: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[bool, SessionRecord | None, Any]:
    """Step the session by 0.4 with a compare-and-set run twice, ``writes`` steps of another
    replica between the two runs: what write_if_unchanged said, and the second run's reply."""

    async def another_replica_steps() -> None:
        for value in OTHER_VALUES[:writes]:
            await other.apply(KEY, twin.compute(value))

    replies: list[Any] = []
    resent = ResentScript(store._compare_and_set_script, another_replica_steps)

    async def recorded(*, keys: list[str], args: list[Any]) -> Any:
        replies.append(await resent(keys=keys, args=args))
        return replies[-1]

    monkeypatch.setattr(store, "_compare_and_set_script", recorded)
    expected = await store.read(KEY)
    written, now = await store.write_if_unchanged(KEY, expected, twin.next_record(0.4, expected))
    return written, now, replies[0]


@pytest.mark.parametrize("writes", [1, 3])
async def test_a_resend_after_other_writes_says_it_wrote_and_what_is_there_now(
    script_stores: tuple[ScriptStore, ScriptStore],
    twin: Twin,
    monkeypatch: pytest.MonkeyPatch,
    writes: int,
) -> None:
    store, other = script_stores
    await twin.step(store, KEY, 0.3)
    written, now, reply = await resend_after_other_writes(store, other, twin, writes, monkeypatch)
    assert reply[0] == WRITTEN_BEFORE_CHANGED
    assert written
    for value in (0.4, *OTHER_VALUES[:writes]):
        twin.feed(value)
    assert_same_record(comparable_record(now), comparable_record(twin.record))
    assert_same_record(comparable_record(await other.get(KEY)), comparable_record(twin.record))


async def test_a_write_whose_token_was_pushed_out_is_a_lost_race(
    script_stores: tuple[ScriptStore, ScriptStore],
    twin: Twin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the last four writes' tokens are kept: a resend that late (never, in practice: it
    follows the lost answer at once) is answered as a race lost, not as a write."""
    store, other = script_stores
    await twin.step(store, KEY, 0.3)
    written, _now, reply = await resend_after_other_writes(store, other, twin, 4, monkeypatch)
    assert reply[0] == 0
    assert not written


async def test_a_resend_after_a_write_that_kept_no_token_answers_that_write(
    stores: tuple[RedisStore, RedisStore], twin: Twin, redis_server: RedisServer
) -> None:
    """A replica of a version without tokens writes the session, leaving its tokens as they
    were: the resend finds its token newest, yet the session is that replica's now, and the
    next step goes on from it."""
    store, other = stores
    await twin.step(store, KEY, 0.3)
    client = Redis.from_url(redis_server.url)
    session = store._key(KEY)

    async def a_replica_without_tokens_steps() -> None:
        tokens = await client.hget(session, "tok")
        await other.apply(KEY, twin.compute(0.5))
        await client.hset(session, "tok", tokens)

    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patched:
        patched.setattr(
            store,
            "_compare_and_set_script",
            ResentScript(store._compare_and_set_script, a_replica_without_tokens_steps),
        )
        expected = await store.read(KEY)
        written, _now = await store.write_if_unchanged(
            KEY, expected, twin.next_record(0.4, expected)
        )
    await client.aclose()
    assert written
    await store.apply(KEY, twin.compute(0.6))
    for value in (0.4, 0.5, 0.6):
        twin.feed(value)
    assert_same_record(comparable_record(await other.get(KEY)), comparable_record(twin.record))


async def test_a_resend_that_found_its_write_makes_a_replicated_write(
    stores: tuple[RedisStore, RedisStore], twin: Twin, redis_server: RedisServer
) -> None:
    """So that a WAIT sent with it (min_replicas) covers the first run's write: from Redis 7.2,
    WAIT on a connection that wrote nothing answers at once."""
    store, _ = stores
    await twin.step(store, KEY, 0.3)
    expected = await store.read(KEY)
    call = store._call(KEY, expected, twin.next_record(0.4, expected))
    script = store._compare_and_set_script
    assert (await script(keys=call.keys, args=call.args))[0] == 1
    before = await redis_command_calls(redis_server.url, "pexpire")
    assert (await script(keys=call.keys, args=call.args))[0] == WRITTEN_BEFORE_CHANGED
    assert await redis_command_calls(redis_server.url, "pexpire") - before == 1


async def test_a_resent_creation_is_applied_once(
    stores: tuple[RedisStore, RedisStore], proxy: AnswerDroppingProxy, twin: Twin
) -> None:
    lossy, direct = stores
    await lossy.apply(OTHER_KEY, twin.compute(0.1))  # the scripts are loaded
    proxy.drop_next_script_answer()
    answer = await lossy.apply(KEY, twin.compute(0.3))
    expected = twin.feed(0.3)
    assert proxy.dropped == 1
    assert answer.step == expected.step
    assert_same_record(comparable_record(await direct.get(KEY)), comparable_record(twin.record))
