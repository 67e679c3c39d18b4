"""Redis session store: any replica serves any session.

A session is a hash ``{prefix}:s:{key}`` holding its encoded record and its revision. A change is
read, computed in the replica, and written by a Lua script only if the revision is still the one
read (compare-and-set, retried on a lost race). Revisions come from one ``INCR`` counter, so they
only ever increase: a reset or a delete-and-recreate between read and write can never make an
old revision current again. Expiry is Redis key expiry; a sorted set by last use counts live
sessions for the cap.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.errors import SessionLimitReached, StoreUnavailable
from app.sessions import SessionRecord
from app.stores.base import Compute, KeyedLocks, T, compare_and_set_loop

# KEYS: session hash, revision counter, live-sessions sorted set.
# ARGV: expected revision ("0": must not exist), record, now (s), ttl (ms), max sessions, member.
# Returns the new revision, -1 when the revision moved on, -2 at the session cap.
_COMPARE_AND_SET = """
local current = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] == '0' then
  if current then return -1 end
  local now = tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]) / 1000)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return -2 end
elseif current ~= ARGV[1] then
  return -1
end
local revision = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'rev', revision, 'rec', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
return revision
"""

_DELETE = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""


class RedisStore:
    """Session records in Redis, shared by every replica."""

    name = "redis"

    def __init__(
        self, url: str, *, prefix: str, ttl_s: float, max_sessions: int, attempts: int = 50
    ) -> None:
        self._url = url
        self._ttl_ms = int(ttl_s * 1000)
        self._max_sessions = max_sessions
        self._attempts = attempts
        self._prefix = prefix
        self._revision_key = f"{prefix}:revision"
        self._live_key = f"{prefix}:live"
        # Fail fast while Redis is down (503 at once, not after a long back-off); one immediate
        # retry covers a pooled connection that Redis dropped when it restarted.
        self._client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=10,
        )
        self._compare_and_set = self._client.register_script(_COMPARE_AND_SET)
        self._local_queue = KeyedLocks()
        self._delete = self._client.register_script(_DELETE)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:s:{key}"

    def _unavailable(self, error: RedisError) -> StoreUnavailable:
        return StoreUnavailable(
            f"Redis session store at {self._safe_url()} is unavailable ({error}); retry shortly"
        )

    def _safe_url(self) -> str:
        # Never echo a password from the URL into responses or logs.
        scheme, _, rest = self._url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    async def get(self, key: str) -> SessionRecord | None:
        try:
            revision, data = await self._client.hmget(self._key(key), ["rev", "rec"])
        except RedisError as error:
            raise self._unavailable(error) from None
        if revision is None or not isinstance(data, bytes):
            return None
        return SessionRecord.decode(data)._replace(revision=int(revision))

    async def _write_if_unchanged(
        self, key: str, expected: SessionRecord | None, new: SessionRecord
    ) -> bool:
        try:
            result = await self._compare_and_set(
                keys=[self._key(key), self._revision_key, self._live_key],
                args=[
                    expected.revision if expected is not None else 0,
                    new.encode(),
                    repr(new.last_used_at),
                    self._ttl_ms,
                    self._max_sessions,
                    key,
                ],
            )
        except RedisError as error:
            raise self._unavailable(error) from None
        if result == -2:
            raise SessionLimitReached(
                f"the service holds its maximum of {self._max_sessions} sessions; "
                "delete or let idle sessions expire, or retry later"
            )
        return int(result) > 0

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        async with self._local_queue.hold(key):
            return await compare_and_set_loop(
                lambda: self.get(key),
                lambda expected, new: self._write_if_unchanged(key, expected, new),
                compute,
                offload=offload,
                attempts=self._attempts,
            )

    async def delete(self, key: str) -> bool:
        try:
            deleted = await self._delete(keys=[self._key(key), self._live_key], args=[key])
        except RedisError as error:
            raise self._unavailable(error) from None
        return int(deleted) > 0

    async def count(self) -> int:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.zremrangebyscore(self._live_key, "-inf", time.time() - self._ttl_ms / 1000)
            pipe.zcard(self._live_key)
            _removed, live = await pipe.execute()
        except RedisError as error:
            raise self._unavailable(error) from None
        return int(live)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as error:
            raise self._unavailable(error) from None

    async def close(self) -> None:
        await self._client.aclose()
