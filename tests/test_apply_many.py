"""``apply_many`` of each store: many sessions at once, exact under concurrent writers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.errors import ServiceError, StepConflict
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import FeedOutcome, SessionRecord, feed
from app.stores.base import Compute, SessionStore
from app.stores.memory import MemoryStore
from app.stores.redis import RedisStore
from app.stores.redis_cluster import RedisClusterStore
from app.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

MakeStore = Callable[[], SessionStore]


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Builds stores over one shared place (two of them: two replicas; memory: one process)."""
    opened: list[SessionStore] = []
    memory = MemoryStore(ttl_s=60, max_sessions=100)

    def make() -> SessionStore:
        store: SessionStore
        if request.param == "memory":
            return memory
        if request.param == "sqlite":
            store = SqliteStore(tmp_path / "s.sqlite3", ttl_s=60, max_sessions=100)
        elif request.param == "redis":
            url = request.getfixturevalue("redis_server").url
            store = RedisStore(url, prefix=f"many-{tmp_path.name}", ttl_s=60, max_sessions=100)
        else:
            url = request.getfixturevalue("empty_redis_cluster").url
            store = RedisClusterStore(url, prefix="many", ttl_s=60, max_sessions=100)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def feeding(
    forecaster: Forecaster, policy: IntervalPolicy, value: float, step: int | None = None
) -> Compute[FeedOutcome]:
    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, policy, (value,), step, time.time())

    return compute


def steps(results: list[Any]) -> list[int | str]:
    return [r.code if isinstance(r, ServiceError) else r.step for r in results]


async def test_each_key_applied_once_with_refusals_in_place(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = make_store()
    await store.apply("a", feeding(forecaster, policy, 0.0))
    results = await store.apply_many(
        [
            ("a", feeding(forecaster, policy, 0.1, step=1)),
            ("b", feeding(forecaster, policy, 0.1, step=4)),
            ("c", feeding(forecaster, policy, 0.1)),
        ]
    )
    assert steps(results) == [2, "step_conflict", 1]
    assert isinstance(results[1], StepConflict)
    assert [await store.get(key) is not None for key in "abc"] == [True, False, True]


@pytest.mark.parametrize("offload", [False, True], ids=["inline", "offloaded"])
async def test_a_session_another_writer_changed_is_applied_on_its_latest_state(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy, offload: bool
) -> None:
    mine, theirs = make_store(), make_store()
    await mine.apply("a", feeding(forecaster, policy, 0.0))  # cached by this replica
    await mine.apply("b", feeding(forecaster, policy, 0.0))
    await theirs.apply("a", feeding(forecaster, policy, 0.5))  # its cache is stale now
    results = await mine.apply_many(
        [("a", feeding(forecaster, policy, 0.1)), ("b", feeding(forecaster, policy, 0.1))],
        offload=offload,
    )
    assert steps(results) == [3, 2]
    record = await theirs.get("a")
    assert record is not None
    assert record.last_values == (0.1,)
    assert record.step == 3


async def test_a_retry_decided_on_a_stale_cache_is_checked_against_the_store(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    mine, theirs = make_store(), make_store()
    await mine.apply("a", feeding(forecaster, policy, 0.0, step=0))  # cached: step 1
    await mine.apply("b", feeding(forecaster, policy, 0.0, step=0))
    await theirs.apply("a", feeding(forecaster, policy, 0.5, step=1))  # now step 2
    # Against the stale cache, step 1 looks applicable; against the store it is a retry of
    # the other replica's request only if the values match: here they do not, so 409.
    results = await mine.apply_many(
        [("a", feeding(forecaster, policy, 0.1, step=1)), ("b", feeding(forecaster, policy, 0.1))]
    )
    assert steps(results) == ["step_conflict", 2]
    again = await mine.apply_many(
        [("a", feeding(forecaster, policy, 0.5, step=1)), ("b", feeding(forecaster, policy, 0.2))]
    )
    assert steps(again) == [2, 3]
    assert isinstance(again[0], FeedOutcome) and again[0].replayed
