"""The single Redis node's revisions never repeat, even when Redis lost its last writes: a
replica's cached revision can then never match a session another replica wrote since."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.stores.redis import RedisStore
from bench.local import RedisServer
from tests.helpers import Twin, assert_same_record, comparable_record

pytestmark = pytest.mark.anyio

HISTORY = 5
NOW = 1_000.0
KEY = "ns/k"


@pytest.fixture
async def replicas(
    redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[RedisStore, RedisStore, Redis]]:
    """Two replicas over one key prefix, and a plain client of their Redis."""
    options: dict[str, Any] = {"ttl_s": 60, "max_sessions": 100, "history": HISTORY}
    prefix = f"revisions-{tmp_path.name}"
    made = [
        RedisStore(redis_server.url, prefix=prefix, clock=lambda: NOW, **options) for _ in range(2)
    ]
    client = Redis.from_url(redis_server.url)
    yield made[0], made[1], client
    for store in made:
        await store.close()
    await client.aclose()


@pytest.fixture
def twin(forecaster: Forecaster, policy: IntervalPolicy) -> Twin:
    return Twin(forecaster, policy, history=HISTORY, now=NOW)


class Snapshot:
    """A session's keys and the revision counter as Redis held them at one moment."""

    def __init__(self, store: RedisStore, client: Redis) -> None:
        self._keys = [store._key(KEY), store._window_key(KEY)]
        self._counter = store._revision_key
        self._client = client
        self._dumps: list[Any] = []
        self._count: Any = None

    async def take(self) -> None:
        self._dumps = [await self._client.dump(key) for key in self._keys]
        self._count = await self._client.get(self._counter)

    async def restore(self) -> None:
        """As if Redis restarted having lost every write since ``take``."""
        for key, dumped in zip(self._keys, self._dumps, strict=True):
            await self._client.restore(key, 0, dumped, replace=True)
        await self._client.set(self._counter, self._count)


async def test_a_replica_never_overwrites_a_step_after_redis_lost_its_last_writes(
    replicas: tuple[RedisStore, RedisStore, Redis], twin: Twin
) -> None:
    mine, other, client = replicas
    await twin.step(mine, KEY, 0.3)
    snapshot = Snapshot(mine, client)
    await snapshot.take()
    await mine.apply(KEY, twin.compute(0.4))  # cached by this replica, then lost by Redis
    await snapshot.restore()
    await twin.step(other, KEY, 0.5)  # the session after the loss, stepped elsewhere
    # This replica's cached revision must not match the other's write: its step is computed
    # again on what Redis holds, not written over the other replica's.
    await twin.step(mine, KEY, 0.6)
    assert_same_record(comparable_record(await other.get(KEY)), comparable_record(twin.record))


async def test_revisions_keep_growing_when_the_counter_is_lost(
    replicas: tuple[RedisStore, RedisStore, Redis], twin: Twin
) -> None:
    store, _, client = replicas
    await store.apply(KEY, twin.compute(0.3))
    before = await store.get(KEY)
    await client.delete(store._revision_key)
    await store.apply("ns/another", twin.compute(0.3))
    after = await store.get("ns/another")
    assert before is not None and after is not None
    assert after.revision > before.revision
