"""How many replicas share the Redis store, so each refills its rate-limit buckets at its share.

Every replica writes its own id with the time into one sorted set (``{prefix}:replicas``) every
``interval_s`` and counts the ids seen within three intervals. That key is touched once per
interval per replica, never per request. While Redis cannot be reached the last count stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from app.rate_limit import RateLimiter
from app.stores.redis_common import client_options
from app.stores.redis_mode import is_cluster

logger = logging.getLogger(__name__)

# Seconds between two heartbeats of a replica; a replica silent for three is no longer counted.
HEARTBEAT_S = 1.0
_FAILURES = (RedisError, RedisClusterException, OSError, RuntimeError)


class ReplicaPeers:
    """This replica's heartbeat, and the count of replicas it reads back."""

    def __init__(self, url: str, prefix: str, limiter: RateLimiter, interval_s: float) -> None:
        self._url = url
        self._key = f"{prefix}:replicas"
        self._limiter = limiter
        self._interval_s = interval_s
        self._id = uuid.uuid4().hex
        self._client: Any = None

    async def beat(self) -> int:
        """Record this replica and count the live ones (RedisError while Redis is down)."""
        if self._client is None:
            cluster = await is_cluster(self._url)
            factory = RedisCluster if cluster else aioredis.Redis
            self._client = factory.from_url(self._url, **client_options())
        now = time.time()
        pipe = self._client.pipeline()
        pipe.zadd(self._key, {self._id: now})
        pipe.zremrangebyscore(self._key, "-inf", now - 3 * self._interval_s)
        pipe.zcard(self._key)
        pipe.pexpire(self._key, int(3000 * self._interval_s))
        _added, _removed, replicas, _expiry = await pipe.execute()
        self._limiter.set_replicas(int(replicas))
        return int(replicas)

    async def run(self) -> None:
        """Beat every interval until cancelled."""
        task = asyncio.current_task()
        while True:
            try:
                await self.beat()
            except _FAILURES as error:
                logger.debug("replica heartbeat failed (%s); keeping the last count", error)
            if task is not None and task.cancelling():
                # redis-py can swallow a cancellation that arrives mid-command; stop anyway.
                raise asyncio.CancelledError
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        """Leave the count at once (a stopped replica's share goes to the others)."""
        if self._client is None:
            return
        try:
            await self._client.zrem(self._key, self._id)
        except _FAILURES:
            pass
        await self._client.aclose()
