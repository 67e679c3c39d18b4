"""What the single-node and the cluster Redis stores share: the client's failure behaviour, the
per-replica record cache, decoding what Redis returns, and confirming writes on replicas."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.errors import InvalidCursor, StoreUnavailable
from app.session_rules import SessionRecord
from app.settings import REDIS_SOCKET_TIMEOUT_S
from app.stores.base import Compute, KeyedLocks, T, apply_optimistically
from app.stores.record_codec import decode_stored_record

# A read whose WAIT confirms the session as read: rewriting the expiry it already has is a write
# (replicated, so it moves this connection's replication offset) that changes nothing.
CONFIRMABLE_READ = """
local current = redis.call('HMGET', KEYS[1], 'rev', 'rec')
if current[1] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return current
"""


def client_options() -> dict[str, Any]:
    """Fail fast while Redis is down (503 at once, not after a long back-off); one immediate
    retry covers a pooled connection that Redis dropped when it restarted."""
    return {
        "socket_connect_timeout": 1.0,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 10,
    }


def safe_url(url: str) -> str:
    """``url`` without its password: never echoed into responses or logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def unavailable(url: str, error: RedisError | str) -> StoreUnavailable:
    """The one 503 every Redis failure becomes."""
    return StoreUnavailable(f"Redis session store at {safe_url(url)}", str(error))


def require_replicas(confirmed: object, wanted: int, timeout_ms: int, url: str) -> None:
    """StoreUnavailable unless ``WAIT`` answered that ``wanted`` replicas have the write.

    Such a write is on the primary but may not survive a failover, so it is not acknowledged;
    a retry with the same step replays it once it is confirmed (or applies it if it was lost).
    """
    count = confirmed if isinstance(confirmed, int) else 0
    if count < wanted:
        raise StoreUnavailable(
            f"Redis session store at {safe_url(url)}",
            f"{count} of {wanted} replicas confirmed the write within {timeout_ms} ms",
            "retry the same request (same step): it is applied at most once",
        )


# Keys SCAN is asked to look at per call when listing sessions (a hint to Redis, not a bound).
SCAN_COUNT = 500

Scan = Callable[[int], Awaitable[tuple[int, list[str]]]]


def glob_escaped(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return re.sub(r"([*?\\[\]\\])", r"\\\1", text)


def key_text(key: bytes | str) -> str:
    """A key as Redis returned it, as text (the client does not decode answers)."""
    return key.decode() if isinstance(key, bytes) else key


def parse_scan_cursor(cursor: str | None) -> tuple[int, int]:
    """(SCAN position, matches of that position's batch already shown), from a page cursor."""
    if cursor is None:
        return 0, 0
    position, separator, skip = cursor.partition(":")
    if not (separator and position.isdigit() and skip.isdigit()):
        raise InvalidCursor(cursor)
    return int(position), int(skip)


async def scan_page(
    scan: Scan, position: int, skip: int, limit: int
) -> tuple[list[str], str | None]:
    """Up to ``limit`` matching keys from SCAN position ``position`` on, ``skip`` of its batch
    already shown; and the cursor after them (None once SCAN is back at 0).

    A page can end inside a batch: the cursor then names the batch's position and how much of
    it was shown. The batch is sorted, so asking again from that position (SCAN answers a
    position the same way while the keys stay) resumes where the page ended."""
    keys: list[str] = []
    while True:
        following, batch = await scan(position)
        rest = sorted(set(batch))[skip:]
        room = limit - len(keys)
        if len(rest) > room:
            return keys + rest[:room], f"{position}:{skip + room}"
        keys += rest
        if following == 0:
            return keys, None
        position, skip = following, 0
        if len(keys) == limit:
            return keys, f"{position}:0"


def record_from(revision: bytes | str | None, data: bytes | str | None) -> SessionRecord | None:
    """The record Redis returned (hash fields ``rev`` and ``rec``), or None for none."""
    if revision is None or not isinstance(data, bytes):
        return None
    return decode_stored_record(data).with_revision(int(revision))


# Sessions a replica remembers at most: a bound on its memory, whatever the session cap.
_CACHE_LIMIT = 100_000


class RecordCache:
    """This replica's last view of the sessions it served, least recently used dropped first.

    It only saves a read: Redis stays the truth, as every write is a compare-and-set.
    """

    def __init__(self, max_sessions: int) -> None:
        self._records: OrderedDict[str, SessionRecord] = OrderedDict()
        self._size = min(max_sessions, _CACHE_LIMIT)

    def get(self, key: str) -> SessionRecord | None:
        return self._records.get(key)

    def remember(self, key: str, record: SessionRecord | None) -> SessionRecord | None:
        """Keep ``record`` (None forgets the key) and hand it back."""
        if record is None:
            self._records.pop(key, None)
            return None
        records = self._records
        records[key] = record
        records.move_to_end(key)
        if len(records) > self._size:
            records.popitem(last=False)
        return record

    def forget(self, key: str) -> None:
        self._records.pop(key, None)


# What a confirmed operation acknowledged, and so what WAIT must have confirmed.


def session_found(result: Any) -> bool:
    """A read found the session: only a session that exists can have been acknowledged (an
    absent one is created, and its write confirmed, or answered 404)."""
    return result[0] is not None


def session_written(result: Any) -> bool:
    """The compare-and-set wrote (a lost race or a refusal acknowledged nothing)."""
    return bool(result[0] == 1)


def session_removed(result: Any) -> bool:
    """A delete answered "deleted" must not come back with a failover."""
    return bool(int(result) > 0)


class OptimisticRedisStore(ABC):
    """The part both Redis stores share: requests for one session queued in this replica, then
    the one compare-and-set loop over this replica's cache and the store's own read and write."""

    _cache: RecordCache
    _local_queue: KeyedLocks
    _attempts: int

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

    @abstractmethod
    async def read(self, key: str) -> SessionRecord | None:
        """What Redis holds now (None: no live session)."""

    @abstractmethod
    async def write_if_unchanged(
        self, key: str, expected: SessionRecord | None, new: SessionRecord
    ) -> tuple[bool, SessionRecord | None]:
        """Compare-and-set: (True, as written) or (False, what Redis holds now)."""
