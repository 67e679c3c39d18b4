"""Which Redis the URL points at: a single node or a Redis Cluster, asked of the node itself."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypedDict

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.errors import ServiceError
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rows import Stepped
from app.session_rules import SessionRecord
from app.settings import Settings
from app.stores.base import Compute, FeedsInPlace, Quotas, SessionStore, T, no_quotas
from app.stores.redis_common import client_options, safe_url, unavailable

logger = logging.getLogger(__name__)


class _StoreOptions(TypedDict):
    """The settings both Redis stores take."""

    prefix: str
    ttl_s: float
    max_sessions: int
    min_replicas: int
    wait_timeout_ms: int
    attempts: int
    quotas: Quotas
    history: int


async def is_cluster(url: str) -> bool:
    """True if the node at ``url`` runs in cluster mode (``INFO cluster``)."""
    client = aioredis.Redis.from_url(url, **client_options())
    try:
        info = await client.info("cluster")
    finally:
        await client.aclose()
    return bool(info.get("cluster_enabled"))


async def open_redis_store(
    settings: Settings, clock: Callable[[], float], quotas: Quotas = no_quotas
) -> SessionStore:
    """The store for the Redis at ``FORECAST_REDIS_URL``; while it cannot be asked, one that
    answers 503 and asks again on each use."""
    try:
        return await _open_for_mode(settings, clock, quotas)
    except RedisError as error:
        logger.error("session store not available yet: %s", unavailable(settings.redis_url, error))
        return PendingRedisStore(settings, clock, quotas)


async def _open_for_mode(
    settings: Settings, clock: Callable[[], float], quotas: Quotas
) -> SessionStore:
    url = settings.redis_url
    store: SessionStore
    options: _StoreOptions = {
        "prefix": settings.redis_prefix,
        "ttl_s": settings.session_ttl_s,
        "max_sessions": settings.max_sessions,
        "min_replicas": settings.redis_min_replicas,
        "wait_timeout_ms": settings.redis_wait_timeout_ms,
        "attempts": settings.store_retry_attempts,
        "quotas": quotas,
        "history": settings.session_history,
    }
    if await is_cluster(url):
        from app.stores.redis_cluster import RedisClusterStore

        # Its revisions come from wall-clock time by design (they must never repeat), and Redis
        # expires its keys: no clock to pass.
        store = RedisClusterStore(url, **options)
        mode = "Redis Cluster"
    else:
        from app.stores.redis import RedisStore

        store = RedisStore(url, clock=clock, **options)
        mode = "a single Redis node"
    logger.info(
        "session store: %s at %s, steps acknowledged after %d replica confirmations",
        mode,
        safe_url(url),
        settings.redis_min_replicas,
    )
    return store


class PendingRedisStore:
    """Stands in until the Redis at the URL answers and says what it is; then hands every call
    to the store for that mode."""

    name = "redis"
    computes_off_event_loop = False

    def __init__(
        self, settings: Settings, clock: Callable[[], float], quotas: Quotas = no_quotas
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._quotas = quotas
        self._store: SessionStore | None = None

    async def _ready(self) -> SessionStore:
        if self._store is None:
            try:
                self._store = await _open_for_mode(self._settings, self._clock, self._quotas)
            except RedisError as error:
                raise unavailable(self._settings.redis_url, error) from None
        return self._store

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        return await (await self._ready()).apply(key, compute, offload=offload)

    async def apply_many(
        self, items: Sequence[tuple[str, Compute[T]]], *, offload: bool = False
    ) -> list[T | ServiceError]:
        return await (await self._ready()).apply_many(items, offload=offload)

    async def feed_in_place(
        self,
        keys: Sequence[str],
        values: Sequence[float],
        steps: Sequence[int | None],
        forecaster: Forecaster,
        policy: IntervalPolicy,
        capacity: int,
        now: float,
    ) -> Stepped:
        """The store's in-place feed once Redis answered, where its mode has one (a single
        node's; a cluster's sessions all take the record path)."""
        store = await self._ready()
        if not isinstance(store, FeedsInPlace):
            return Stepped.nothing()
        return await store.feed_in_place(keys, values, steps, forecaster, policy, capacity, now)

    async def get(self, key: str) -> SessionRecord | None:
        return await (await self._ready()).get(key)

    async def delete(self, key: str) -> bool:
        return await (await self._ready()).delete(key)

    async def count(self) -> int:
        return await (await self._ready()).count()

    async def list_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        return await (await self._ready()).list_page(prefix, cursor, limit)

    async def namespace_counts(self) -> dict[str, int]:
        return await (await self._ready()).namespace_counts()

    async def ping(self) -> None:
        await (await self._ready()).ping()

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
