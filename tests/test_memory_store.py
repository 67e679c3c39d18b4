"""The in-process store's expiry and cap, on a clock the test moves."""

from __future__ import annotations

import pytest

from app.errors import SessionLimitReached
from app.sessions import FeedOutcome, SessionRecord, feed
from app.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _touch(store: MemoryStore, forecaster, clock: Clock, key: str) -> int:
    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, [0.1], None, clock.now)

    outcome = await store.apply(key, compute)
    return outcome.step


async def test_sessions_expire_by_their_own_last_use_even_after_reordering(forecaster):
    clock = Clock()
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


async def test_cap_counts_live_sessions_and_expired_ones_make_room(forecaster):
    clock = Clock()
    store = MemoryStore(ttl_s=10, max_sessions=2, clock=clock)
    await _touch(store, forecaster, clock, "a")
    await _touch(store, forecaster, clock, "b")
    with pytest.raises(SessionLimitReached):
        await _touch(store, forecaster, clock, "c")
    assert await _touch(store, forecaster, clock, "a") == 2  # existing sessions still served
    clock.now = 10.5  # both idle past the TTL: room again
    assert await _touch(store, forecaster, clock, "c") == 1
    assert await store.count() == 1
