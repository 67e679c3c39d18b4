"""The in-process store's expiry and cap, on a clock the test moves."""

from __future__ import annotations

import pytest

from app.errors import SessionLimitReached
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import FeedOutcome, SessionRecord, feed
from app.stores.memory import MemoryStore
from tests.helpers import Clock

pytestmark = pytest.mark.anyio
NO_INTERVALS = IntervalPolicy.build(None, (), rate=0.05, window=50)


async def _touch(store: MemoryStore, forecaster: Forecaster, clock: Clock, key: str) -> int:
    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, NO_INTERVALS, [0.1], None, clock.now)

    outcome = await store.apply(key, compute)
    return outcome.step


async def test_sessions_expire_by_their_own_last_use_even_after_reordering(
    forecaster: Forecaster,
) -> None:
    clock = Clock(0.0)
    store = MemoryStore(ttl_s=10, max_sessions=10, clock=clock)
    await _touch(store, forecaster, clock, "a")  # a used at 0
    clock.now = 5
    await _touch(store, forecaster, clock, "b")  # b used at 5
    clock.now = 8
    assert await _touch(store, forecaster, clock, "a") == 2  # a used again at 8
    clock.now = 12  # nothing idle for 10 s yet: a was used at 8, b at 5
    assert await store.count() == 2
    clock.now = 16  # b idle since 5
    assert await store.get("b") is None and await store.get("a") is not None
    clock.now = 18.5  # a idle since 8: a new session
    assert await _touch(store, forecaster, clock, "a") == 1
    assert await store.count() == 1


async def test_cap_refuses_a_new_session_and_keeps_serving_existing_ones(
    forecaster: Forecaster,
) -> None:
    clock = Clock(0.0)
    store = MemoryStore(ttl_s=10, max_sessions=2, clock=clock)
    await _touch(store, forecaster, clock, "a")
    await _touch(store, forecaster, clock, "b")
    with pytest.raises(SessionLimitReached):
        await _touch(store, forecaster, clock, "c")
    assert await _touch(store, forecaster, clock, "a") == 2


async def test_expired_sessions_make_room_under_the_cap(forecaster: Forecaster) -> None:
    clock = Clock(0.0)
    store = MemoryStore(ttl_s=10, max_sessions=2, clock=clock)
    await _touch(store, forecaster, clock, "a")
    await _touch(store, forecaster, clock, "b")
    clock.now = 10.5  # both idle past the TTL: room again
    assert await _touch(store, forecaster, clock, "c") == 1
    assert await store.count() == 1


async def test_offloaded_computes_retry_on_what_won_the_race(forecaster: Forecaster) -> None:
    """Two offloaded feeds of one session, started together: both apply, one after the other."""
    import asyncio

    clock = Clock(0.0)
    store = MemoryStore(ttl_s=10, max_sessions=2, clock=clock)

    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, NO_INTERVALS, [0.1] * 100, None, clock.now)

    first, second = await asyncio.gather(
        store.apply("a", compute, offload=True), store.apply("a", compute, offload=True)
    )
    assert sorted((first.step, second.step)) == [100, 200]
