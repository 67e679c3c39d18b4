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
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.errors import SessionLimitReached, StoreUnavailable
from app.session_rules import SessionRecord
from app.settings import DEFAULT_CAS_ATTEMPTS
from app.stores.base import Compute, KeyedLocks, T, apply_optimistically
from app.stores.record_codec import decode_stored_record, encode_record

# KEYS: session hash, revision counter, live-sessions sorted set.
# ARGV: expected revision ("0": must not exist), record, now (s), ttl (ms), max sessions, member.
# Returns {1, new revision}; {0, revision, record} with what is there now when the revision moved
# on (so the caller can retry without another read); {-2} at the session cap.
_COMPARE_AND_SET = """
local current = redis.call('HMGET', KEYS[1], 'rev', 'rec')
if ARGV[1] == '0' then
  if current[1] then return {0, current[1], current[2]} end
  local now = tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]) / 1000)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {-2} end
elseif current[1] ~= ARGV[1] then
  return {0, current[1], current[2]}
end
local revision = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'rev', revision, 'rec', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
return {1, revision}
"""

_DELETE = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""


class RedisStore:
    """Session records in Redis, shared by every replica."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl_s: float,
        max_sessions: int,
        attempts: int = DEFAULT_CAS_ATTEMPTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._ttl_ms = int(ttl_s * 1000)
        self._max_sessions = max_sessions
        self._attempts = attempts
        self._clock = clock
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
        self._compare_and_set_script = self._client.register_script(_COMPARE_AND_SET)
        # This replica's last view of sessions it served: one round trip per step instead of
        # two while no other replica touches the session.
        self._cache: OrderedDict[str, SessionRecord] = OrderedDict()
        self._cache_size = min(max_sessions, 100_000)
        self._local_queue = KeyedLocks()
        self._delete = self._client.register_script(_DELETE)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:s:{key}"

    def _unavailable(self, error: RedisError) -> StoreUnavailable:
        return StoreUnavailable(f"Redis session store at {self._safe_url()}", str(error))

    def _safe_url(self) -> str:
        # Never echo a password from the URL into responses or logs.
        scheme, _, rest = self._url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    async def get(self, key: str) -> SessionRecord | None:
        return await self.read(key)

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        async with self._local_queue.hold(key):
            return await apply_optimistically(
                self, key, compute, offload=offload, attempts=self._attempts
            )

    # -- OptimisticBackend ---------------------------------------------------------------------

    def cached(self, key: str) -> SessionRecord | None:
        return self._cache.get(key)

    async def read(self, key: str) -> SessionRecord | None:
        try:
            revision, data = await self._client.hmget(self._key(key), ["rev", "rec"])
        except RedisError as error:
            raise self._unavailable(error) from None
        return self._remember(key, _record(revision, data))

    async def write_if_unchanged(
        self, key: str, expected: SessionRecord | None, new: SessionRecord
    ) -> tuple[bool, SessionRecord | None]:
        try:
            result = await self._compare_and_set_script(
                keys=[self._key(key), self._revision_key, self._live_key],
                args=[
                    expected.revision if expected is not None else 0,
                    encode_record(new),
                    repr(new.last_used_at),
                    self._ttl_ms,
                    self._max_sessions,
                    key,
                ],
            )
        except RedisError as error:
            raise self._unavailable(error) from None
        if result[0] == -2:
            raise SessionLimitReached(self._max_sessions)
        if result[0] == 1:
            return True, self._remember(key, new.with_revision(int(result[1])))
        return False, self._remember(key, _record(result[1], result[2]))

    def _remember(self, key: str, record: SessionRecord | None) -> SessionRecord | None:
        # Bounded: the cache only saves a read; Redis stays the truth (every write is a CAS).
        if record is None:
            self._cache.pop(key, None)
            return None
        self._cache[key] = record
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return record

    async def delete(self, key: str) -> bool:
        self._cache.pop(key, None)
        try:
            deleted = await self._delete(keys=[self._key(key), self._live_key], args=[key])
        except RedisError as error:
            raise self._unavailable(error) from None
        return int(deleted) > 0

    async def count(self) -> int:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.zremrangebyscore(self._live_key, "-inf", self._clock() - self._ttl_ms / 1000)
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


def _record(revision: bytes | str | None, data: bytes | str | None) -> SessionRecord | None:
    if revision is None or not isinstance(data, bytes):
        return None
    return decode_stored_record(data).with_revision(int(revision))
