"""What the single-node and the cluster Redis stores share: the client's failure behaviour, the
per-replica record cache, decoding what Redis returns, and confirming writes on replicas."""

from __future__ import annotations

import asyncio
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import anyio.to_thread
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from app.errors import (
    InvalidCursor,
    ServiceError,
    SessionLimitReached,
    SessionQuotaReached,
    StoreUnavailable,
)
from app.recently_used import RecentlyUsed
from app.session_history import Window, as_array
from app.session_rules import SessionRecord
from app.settings import REDIS_SOCKET_TIMEOUT_S
from app.stores.base import (
    Compute,
    KeyedLocks,
    T,
    apply_each,
    apply_optimistically,
    compute_each,
)
from app.stores.cached_rows import CachedRows
from app.stores.record_codec import decode_stored_record
from app.window_ring import RingWindow, changed_pieces, ring_bytes, ring_slots, row_size

# KEYS: the session hash, its window (a string: app.window_ring). Returns {revision,
# record, window}, each nil when absent: both at once, so that they belong together.
READ = """
local current = redis.call('HMGET', KEYS[1], 'rev', 'rec')
return {current[1], current[2], redis.call('GET', KEYS[2])}
"""
# The same read, whose WAIT confirms the session as read: rewriting the expiry it already has is
# a write (replicated, so it moves this connection's replication offset) that changes nothing.
CONFIRMABLE_READ = """
local current = redis.call('HMGET', KEYS[1], 'rev', 'rec')
if current[1] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
return {current[1], current[2], redis.call('GET', KEYS[2])}
"""
# What the compare-and-set scripts do with the window, after their revision check: ARGV from
# WINDOW_ARGV on. 'F': the whole ring (the next argument); 'R': rows of it (the ring's expected
# length in bytes, then offset and bytes, once or twice), {-4} when the ring is not that long;
# 'N': no window. %s: how the scripts name the session's expiry in ms.
_WINDOW_CHECK = """
if ARGV[{at}] == 'R' and redis.call('STRLEN', KEYS[{key}]) ~= tonumber(ARGV[{at} + 1]) then
  return {{-4}}
end
"""
_WINDOW_WRITE = """
if ARGV[{at}] == 'F' then
  redis.call('SET', KEYS[{key}], ARGV[{at} + 1], 'PX', ARGV[{ttl}])
elseif ARGV[{at}] == 'R' then
  redis.call('SETRANGE', KEYS[{key}], ARGV[{at} + 2], ARGV[{at} + 3])
  if ARGV[{at} + 4] then redis.call('SETRANGE', KEYS[{key}], ARGV[{at} + 4], ARGV[{at} + 5]) end
  redis.call('PEXPIRE', KEYS[{key}], ARGV[{ttl}])
else
  redis.call('DEL', KEYS[{key}])
end
"""


def window_script_parts(*, key: int, at: int, ttl: int) -> tuple[str, str]:
    """The Lua that checks (before any write) and writes the window: the window's key is
    KEYS[key], its arguments start at ARGV[at], the session's expiry in ms is ARGV[ttl]."""
    return (
        _WINDOW_CHECK.format(key=key, at=at),
        _WINDOW_WRITE.format(key=key, at=at, ttl=ttl),
    )


# The compare-and-set scripts' answer when the ring was not as the rows assumed (written by a
# replica with another window size, or by a version that kept the window in the record).
RING_MISMATCH = -4

# Each compare-and-set call carries a token drawn for it alone, and the session keeps the tokens
# of its last writes (hash field 'tok', newest first). redis-py sends a command again when its
# answer was lost (a dropped connection, a timeout: client_options' retry), and the script then
# runs a second time, finds the revision moved on (by its own first run) and would answer a lost
# race: the caller would compute the step again and apply it twice. The token tells that run
# that the write is its own, already applied.
WRITE_TOKEN_BYTES = 8
_TOKENS_KEPT = 4
# The answer of a call whose write an earlier run of it applied: {WRITTEN_BEFORE_CHANGED,
# revision, record, window}, what is there now. Always what is there now, even when the token is
# the newest: a replica of a version that keeps no tokens may have written since.
WRITTEN_BEFORE_CHANGED = 3
# Lua: the session's revision and tokens, read first by the compare-and-set scripts.
_READ_REVISION_AND_TOKENS = """
local stored = redis.call('HMGET', KEYS[1], 'rev', 'tok')
local current, tokens = stored[1], stored[2]
"""
# Lua: the answer when the revision moved on: this call's own write (a run of it before, whose
# answer was lost), or a lost race, with what is there now. Its own write found, it rewrites the
# session's expiry unchanged: a replicated write on this connection, so that a WAIT sent with
# the resend (min_replicas) waits for the replicas to have everything before it, the first
# run's write included (from Redis 7.2, WAIT on a connection that wrote nothing answers at once).
_MOVED_ON = """
local function moved_on(KEYS, ARGV, current, tokens)
  local now = {{0, current, redis.call('HGET', KEYS[1], 'rec'), redis.call('GET', KEYS[{window}])}}
  for at = 1, tokens and #tokens or 0, {size} do
    if string.sub(tokens, at, at + {size} - 1) == ARGV[{token}] then
      now[1] = {written_before}
      local ttl = redis.call('PTTL', KEYS[1])
      if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
      break
    end
  end
  return now
end
"""
# Lua: the tokens to keep with a write (this call's first).
_KEPT_TOKENS = "ARGV[{token}] .. string.sub(tokens or '', 1, {kept})"


def write_token_script_parts(*, token: int, window: int) -> tuple[str, str, str]:
    """The Lua of the write tokens: a ``moved_on(KEYS, ARGV, current, tokens)`` function (to
    define before the script's body), the read of ``current`` and ``tokens`` (the body's
    first), and the expression of the tokens its write keeps. The call's token is ARGV[token],
    the session's window KEYS[window]."""
    return (
        _MOVED_ON.format(
            token=token,
            window=window,
            size=WRITE_TOKEN_BYTES,
            written_before=WRITTEN_BEFORE_CHANGED,
        ),
        _READ_REVISION_AND_TOKENS,
        _KEPT_TOKENS.format(token=token, kept=WRITE_TOKEN_BYTES * (_TOKENS_KEPT - 1)),
    )


def write_tokens(count: int) -> list[bytes]:
    """``count`` write tokens, each drawn from the system's random source (not the seedable
    ``random``: a seeded generator would draw the same tokens in every process)."""
    data = os.urandom(WRITE_TOKEN_BYTES * count)
    return [
        data[start : start + WRITE_TOKEN_BYTES] for start in range(0, len(data), WRITE_TOKEN_BYTES)
    ]


class WindowWrite(NamedTuple):
    """How the compare-and-set scripts write a record's window: their window arguments, and the
    window as Redis then holds it (the ring, so that a cached record's next step writes its rows
    into it, as for a record read back)."""

    args: list[EncodableT]
    kept: Window | None


def window_write(
    expected: SessionRecord | None, new: SessionRecord, history: int, *, whole: bool = False
) -> WindowWrite:
    """Writing ``new``'s window over ``expected``'s in a service that keeps ``history`` values:
    only the rows that changed when the ring allows it (and not ``whole``)."""
    window = new.history
    if window is None or window.shape[0] == 0:
        return WindowWrite(["N"], None)
    read = expected.history if expected is not None else None
    if isinstance(window, RingWindow):
        if not whole and isinstance(read, RingWindow) and window.pushed_from(read):
            # The step's rows, written into the ring this window was read from.
            pushed: list[EncodableT] = ["R", len(read.ring)]
            for offset, data in window.pieces:
                pushed += [offset, data]
            return WindowWrite(pushed, window)
        window = window.array()
    rows, columns = window.shape
    if not whole and expected is not None and read is not None:
        slots = ring_slots(history, read.shape[0])
        pieces = changed_pieces(as_array(read), expected.step, window, new.step, slots)
        if pieces is not None:
            args: list[EncodableT] = ["R", slots * row_size(columns)]
            for offset, data in pieces:
                args += [offset, data]
            ring = ring_bytes(window, new.step, slots)  # a feed of several values: not per step
            return WindowWrite(args, RingWindow(ring, rows, columns, new.step))
    ring = ring_bytes(window, new.step, ring_slots(history, rows))
    return WindowWrite(["F", ring], RingWindow(ring, rows, columns, new.step))


def kept_record(new: SessionRecord, write: WindowWrite) -> SessionRecord:
    """``new`` as its compare-and-set leaves it in Redis: what a replica's cache keeps."""
    kept = write.kept.settled() if isinstance(write.kept, RingWindow) else write.kept
    return new if kept is new.history else new.with_history(kept)


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


def record_from(
    revision: bytes | str | None, data: bytes | str | None, ring: bytes | str | None
) -> SessionRecord | None:
    """The record Redis returned (hash fields ``rev`` and ``rec``, and the window's ring; None
    for a listing that needs no window), or None for none."""
    if revision is None or not isinstance(data, bytes):
        return None
    window = ring if isinstance(ring, bytes) else None
    return decode_stored_record(data, window).with_revision(int(revision))


# Sessions a replica remembers at most: a bound on its memory, whatever the session cap.
_CACHE_LIMIT = 100_000


class RecordCache:
    """This replica's last view of the sessions it served, least recently used dropped first.

    It only saves a read: Redis stays the truth, as every write is a compare-and-set. A session
    this replica steps in place is a row of ``rows`` instead (app.stores.cached_rows), never
    both: whatever the record path reads or writes of a session ends its row.
    """

    def __init__(self, max_sessions: int, rows: CachedRows | None = None) -> None:
        self._records: RecentlyUsed[SessionRecord] = RecentlyUsed(min(max_sessions, _CACHE_LIMIT))
        self._rows = rows

    def get(self, key: str) -> SessionRecord | None:
        return self._records.get(key)

    def remember(self, key: str, record: SessionRecord | None) -> SessionRecord | None:
        """Keep ``record`` (None forgets the key) and hand it back."""
        if self._rows is not None:
            self._rows.forget(key)
        if record is None:
            self._records.pop(key)
            return None
        self._records.keep(key, record)
        return record

    def forget(self, key: str) -> None:
        if self._rows is not None:
            self._rows.forget(key)
        self._records.pop(key)

    def take(self, key: str) -> SessionRecord | None:
        """The record, no longer kept (its session becomes a row), or None."""
        return self._records.pop(key)


# What a confirmed operation acknowledged, and so what WAIT must have confirmed.


def session_found(result: Any) -> bool:
    """A read found the session: only a session that exists can have been acknowledged (an
    absent one is created, and its write confirmed, or answered 404)."""
    return result[0] is not None


def session_written(result: Any) -> bool:
    """The compare-and-set wrote (a lost race or a refusal acknowledged nothing)."""
    return bool(result[0] == 1 or result[0] == WRITTEN_BEFORE_CHANGED)


def session_removed(result: Any) -> bool:
    """A delete answered "deleted" must not come back with a failover."""
    return bool(int(result) > 0)


class CompareAndSet(NamedTuple):
    """One compare-and-set call of a store's script: its keys and arguments, the revision
    the record gets if it is written (None: the script draws it and answers it), and the quota
    of the key a new session counts against (None: none, or not a new session)."""

    keys: list[str]
    args: list[EncodableT]
    revision: int | None
    quota: int | None
    kept: SessionRecord  # the record as written: app.stores.redis_common.kept_record


class OptimisticRedisStore(ABC):
    """The part both Redis stores share: requests for one session queued in this replica, then
    the one compare-and-set loop over this replica's cache and the store's own read and write;
    and ``apply_many``, the same for many sessions in two round trips (reads, then writes)
    while no other replica races them."""

    _cache: RecordCache
    _local_queue: KeyedLocks
    _attempts: int
    _max_sessions: int
    _min_replicas: int
    _url: str
    # The compare-and-set script, the read scripts (READ, CONFIRMABLE_READ), and what a failed
    # call of the store's client raises.
    _compare_and_set_script: AsyncScript
    _read_script: AsyncScript
    _confirmable_read: AsyncScript
    _failures: tuple[type[BaseException], ...] = (RedisError,)

    async def get(self, key: str) -> SessionRecord | None:
        return await self.read(key)

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        async with self._local_queue.hold(key):
            return await apply_optimistically(
                self, key, compute, offload=offload, attempts=self._attempts
            )

    async def apply_many(
        self, items: Sequence[tuple[str, Compute[T]]], *, offload: bool = False
    ) -> list[T | ServiceError]:
        """Hold every key's local queue, read the uncached records in one pipeline, compute,
        send every compare-and-set in one pipeline; an item that lost its race, or was computed
        from a cached record into a replay or a refusal (only a record Redis returned may
        decide those), then takes ``apply``'s path. With ``min_replicas``, every item takes it:
        each write waits for its own confirmation on its own connection."""
        if self._min_replicas or len(items) == 1:
            return await apply_each(self, items, offload=offload)
        async with self._local_queue.hold_all([key for key, _ in items]):
            return await self._apply_many_held(items, offload)

    async def _apply_many_held(
        self, items: Sequence[tuple[str, Compute[T]]], offload: bool
    ) -> list[T | ServiceError]:
        cache = self._cache
        records = [cache.get(key) for key, _ in items]
        trusted = [record is None for record in records]
        unread = [index for index, record in enumerate(records) if record is None]
        if unread:
            read = await self._read_many([items[index][0] for index in unread])
            for index, record in zip(unread, read, strict=True):
                records[index] = record
        computes = [compute for _, compute in items]
        if offload:
            computed = await anyio.to_thread.run_sync(compute_each, computes, records)
        else:
            computed = compute_each(computes, records)
        results: dict[int, T | ServiceError] = {}
        again: list[int] = []
        writes: list[tuple[int, SessionRecord, T]] = []
        for index, outcome in enumerate(computed):
            if isinstance(outcome, ServiceError):
                if trusted[index]:
                    results[index] = outcome
                else:
                    again.append(index)
            elif outcome[0] is not None:
                writes.append((index, outcome[0], outcome[1]))
            elif trusted[index]:
                results[index] = outcome[1]
            else:
                again.append(index)
        if writes:
            written = await self._write_many(
                [(items[index][0], records[index], new) for index, new, _ in writes]
            )
            for (index, _, answer), result in zip(writes, written, strict=True):
                if isinstance(result, ServiceError):
                    results[index] = result
                elif result:
                    results[index] = answer
                else:
                    again.append(index)
        if again:
            redone = await asyncio.gather(*(self._apply_held(*items[i], offload) for i in again))
            results.update(zip(again, redone, strict=True))
        return [results[index] for index in range(len(items))]

    async def _apply_held(self, key: str, compute: Compute[T], offload: bool) -> T | ServiceError:
        try:
            return await apply_optimistically(
                self, key, compute, offload=offload, attempts=self._attempts
            )
        except ServiceError as error:
            return error

    async def _read_many(self, keys: list[str]) -> list[SessionRecord | None]:
        script = self._read_script
        commands: list[list[EncodableT]] = [
            [2, self._key(key), self._window_key(key)] for key in keys
        ]
        for _attempt in range(2):
            try:
                replies = await self._evalsha_each(script, commands)
            except self._failures as error:
                raise unavailable(self._url, str(error)) from None
            if not any(isinstance(reply, NoScriptError) for reply in replies):
                break
            # Redis restarted: its script cache is empty.
            await script.registered_client.script_load(script.script)
        cache = self._cache
        records: list[SessionRecord | None] = []
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, BaseException):
                raise unavailable(self._url, str(reply))
            records.append(cache.remember(key, record_from(*reply)))
        return records

    async def _write_many(
        self, writes: list[tuple[str, SessionRecord | None, SessionRecord]]
    ) -> list[bool | ServiceError]:
        """Every compare-and-set in one round trip (``_send_compare_and_sets``): True (written),
        False (lost its race, or the script was not loaded: apply's path retries it) or the
        refusal (the cap)."""
        built = await self._calls_or_refusals(writes)
        outcomes: list[bool | ServiceError] = [
            call if isinstance(call, ServiceError) else False for call in built
        ]
        sent = [
            (index, call) for index, call in enumerate(built) if isinstance(call, CompareAndSet)
        ]
        if not sent:
            return outcomes
        try:
            replies = await self._send_compare_and_sets([call for _, call in sent])
        except self._failures as error:
            raise unavailable(self._url, str(error)) from None
        for (index, call), reply in zip(sent, replies, strict=True):
            key, _, new = writes[index]
            if isinstance(reply, NoScriptError) or (
                not isinstance(reply, BaseException) and reply[0] == RING_MISMATCH
            ):
                # Redis restarted (apply's path loads the script), or the window's ring was
                # not as assumed (apply's path writes it whole).
                outcomes[index] = False
            elif isinstance(reply, self._failures):
                raise unavailable(self._url, str(reply))
            else:
                try:
                    outcomes[index] = self._compare_and_set_outcome(key, new, call, reply)[0]
                except (SessionLimitReached, SessionQuotaReached) as error:
                    await self._refused(key, call)
                    outcomes[index] = error
        return outcomes

    async def _calls_or_refusals(
        self, writes: list[tuple[str, SessionRecord | None, SessionRecord]]
    ) -> list[CompareAndSet | SessionQuotaReached]:
        """A call per write, or its key's quota refusal. Only a new session's call may wait on
        Redis (the cluster reserves its place in its namespace first, as apply's path does):
        those are built concurrently, the others in place (no coroutine each)."""
        built: list[CompareAndSet | SessionQuotaReached | None] = [None] * len(writes)
        fresh: list[int] = []
        for index, (key, expected, new) in enumerate(writes):
            if expected is None:
                fresh.append(index)
            else:
                built[index] = self._update_call(key, expected, new)
        if fresh:
            made = await asyncio.gather(*(self._call_or_refusal(*writes[i]) for i in fresh))
            for index, call in zip(fresh, made, strict=True):
                built[index] = call
        return [call for call in built if call is not None]

    async def _send_compare_and_sets(self, calls: list[CompareAndSet]) -> list[Any]:
        """Each call's reply, in order (the exception in its place for a call that failed):
        one pipeline of the script's calls."""
        return await self._evalsha_each(
            self._compare_and_set_script,
            [[len(call.keys), *call.keys, *call.args] for call in calls],
        )

    async def _evalsha_each(
        self, script: AsyncScript, commands: list[list[EncodableT]]
    ) -> list[Any]:
        """Each command (keys count, keys, arguments) as a call of ``script``, in one pipeline:
        each call's reply, or the error in its place."""
        pipe = self._pipeline()
        for command in commands:
            # Through execute_command: redis-py's cluster pipeline refuses its evalsha method
            # (a script's keys may span slots), but routes an EVALSHA command by its keys
            # (redis/asyncio/cluster.py, _determine_slot), and each cluster call has one slot.
            pipe.execute_command("EVALSHA", script.sha, *command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _call_or_refusal(
        self, key: str, expected: SessionRecord | None, new: SessionRecord
    ) -> CompareAndSet | SessionQuotaReached:
        try:
            return await self._compare_and_set_call(key, expected, new)
        except SessionQuotaReached as refusal:
            return refusal

    async def _refused(self, key: str, call: CompareAndSet) -> None:
        """After the script refused a new session: undo what ``_compare_and_set_call`` took
        for it (Redis Cluster gives back its namespace place); nothing by default."""
        return None

    def _compare_and_set_outcome(
        self, key: str, new: SessionRecord, call: CompareAndSet, reply: Any
    ) -> tuple[bool, SessionRecord | None]:
        """What the script answered: (True, as written), (True, what Redis holds now) when an
        earlier run of this call wrote (a resend), or (False, what Redis holds now)."""
        if reply[0] == -3:
            raise SessionQuotaReached(call.quota or 0)
        if reply[0] == -2:
            raise SessionLimitReached()
        if reply[0] == 1:
            revision = call.revision if call.revision is not None else int(reply[1])
            return True, self._cache.remember(key, call.kept.with_revision(revision))
        now = self._cache.remember(key, record_from(reply[1], reply[2], reply[3]))
        return reply[0] == WRITTEN_BEFORE_CHANGED, now

    # -- what each store says for itself -------------------------------------------------------

    @abstractmethod
    def _key(self, key: str) -> str:
        """The Redis key of a session."""

    @abstractmethod
    def _window_key(self, key: str) -> str:
        """The Redis key of a session's window (in the session's hash slot)."""

    @abstractmethod
    def _pipeline(self) -> Any:
        """A pipeline (no transaction) of the store's client."""

    @abstractmethod
    async def _compare_and_set_call(
        self,
        key: str,
        expected: SessionRecord | None,
        new: SessionRecord,
        *,
        whole_window: bool = False,
    ) -> CompareAndSet:
        """The script call that writes ``new`` if the session is still ``expected`` (its window
        whole with ``whole_window``, else only the rows that changed where the ring allows)."""

    def _update_call(self, key: str, expected: SessionRecord, new: SessionRecord) -> CompareAndSet:
        """``_compare_and_set_call`` of a session that exists (its window's changed rows where
        the ring allows): it never waits on Redis, so it is built in place."""
        return self._call(key, expected, new)

    @abstractmethod
    def _call(
        self,
        key: str,
        expected: SessionRecord | None,
        new: SessionRecord,
        quota: int | None = None,
        whole_window: bool = False,
    ) -> CompareAndSet:
        """The call itself, once whatever a new session needs first is done (``quota``: the
        key's quota a new session counts against, None: none, or not a new session)."""

    @abstractmethod
    async def _run_confirmed(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[EncodableT],
        needs_confirmation: Callable[[Any], bool],
    ) -> Any:
        """Run ``script`` on ``keys`` (one slot), then WAIT on the same connection; the
        script's result, or StoreUnavailable when it ``needs_confirmation`` and too few
        replicas confirmed within the timeout."""

    # -- OptimisticBackend ---------------------------------------------------------------------

    def cached(self, key: str) -> SessionRecord | None:
        return self._cache.get(key)

    async def read(self, key: str) -> SessionRecord | None:
        """What Redis holds now (None: no live session): the record and its window's ring."""
        keys = [self._key(key), self._window_key(key)]
        try:
            if self._min_replicas:
                reply = await self._run_confirmed(self._confirmable_read, keys, [], session_found)
            else:
                reply = await self._read_script(keys=keys)
        except self._failures as error:
            raise unavailable(self._url, str(error)) from None
        return self._cache.remember(key, record_from(*reply))

    async def write_if_unchanged(
        self, key: str, expected: SessionRecord | None, new: SessionRecord
    ) -> tuple[bool, SessionRecord | None]:
        """Compare-and-set: (True, as written) or (False, what Redis holds now)."""
        call = await self._compare_and_set_call(key, expected, new)
        result = await self._run_compare_and_set(call)
        if result[0] == RING_MISMATCH:
            call = await self._compare_and_set_call(key, expected, new, whole_window=True)
            result = await self._run_compare_and_set(call)
        if self._min_replicas and result[0] == 0:
            # What won the race decides the answer: it must be confirmed like any other read.
            return False, await self.read(key)
        try:
            return self._compare_and_set_outcome(key, new, call, result)
        except SessionLimitReached:
            await self._refused(key, call)
            raise

    async def _run_compare_and_set(self, call: CompareAndSet) -> Any:
        try:
            if self._min_replicas:
                return await self._run_confirmed(
                    self._compare_and_set_script, call.keys, call.args, session_written
                )
            return await self._compare_and_set_script(keys=call.keys, args=call.args)
        except self._failures as error:
            raise unavailable(self._url, str(error)) from None
