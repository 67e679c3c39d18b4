"""Redis session store on a single Redis node: any replica of the service serves any session.

A session is a hash ``{prefix}:s:{key}`` holding its encoded record (without its history window)
and its revision, and a string ``{prefix}:w:{key}`` holding the window as a ring of rows
(:mod:`app.window_ring`): a step writes the rows it changed, not the whole window. A
change is read, computed in the replica, and written by a Lua script only if the revision is
still the one read (compare-and-set, retried on a lost race). Revisions come from one counter
that never falls behind Redis's clock in microseconds, so they only ever increase: a reset or a
delete-and-recreate between read and write can never make an old revision current again, nor
can a Redis that lost its last writes (a restart without its AOF's last second) hand out again a
revision a replica cached before. Expiry is Redis key expiry; a sorted set by last
use counts live sessions for the cap. (A Redis Cluster gets :mod:`app.stores.redis_cluster`,
which needs no key shared by all sessions.)

With ``min_replicas``, the script and a ``WAIT`` go down one connection in one pipeline, and a
read that may decide an answer first rewrites the key's expiry unchanged (a replicated write
that changes nothing), so its ``WAIT`` covers what was written to the session before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from app.auth import namespace_of
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rows import IntArray, SessionRows, Stepped, StepRowsCompiling
from app.session_rules import SessionRecord
from app.settings import DEFAULT_CAS_ATTEMPTS
from app.stores.base import KeyedLocks, Quotas, no_quotas
from app.stores.cached_rows import CACHED_ROWS_LIMIT, CachedRows
from app.stores.record_codec import encode_record
from app.stores.redis_common import (
    CONFIRMABLE_READ,
    READ,
    SCAN_COUNT,
    WRITTEN_BEFORE_CHANGED,
    CompareAndSet,
    OptimisticRedisStore,
    RecordCache,
    client_options,
    glob_escaped,
    kept_record,
    key_text,
    parse_scan_cursor,
    record_from,
    require_replicas,
    scan_page,
    session_removed,
    unavailable,
    window_script_parts,
    window_write,
    write_token_script_parts,
    write_tokens,
)
from app.stores.redis_packing import pack_in_c
from app.stores.row_codec import rows_records, rows_rings, rows_step_pieces
from app.window_ring import row_size

# KEYS: session hash, revision counter, live-sessions sorted set, the namespace's sorted set, the
# session's window (app.window_ring).
# ARGV: expected revision ("0": must not exist), record, now (s), ttl (ms), max sessions, member,
# the namespace's quota ("0": none), the call's write token (redis_common.write_tokens), then
# the window's (redis_common.window_write).
# Returns {1, new revision}; {0, revision, record, window} with what is there now when the
# revision moved on (so the caller can retry without another read), or {3, ...} the same when
# that was this call's own write, run before (redis_common.WRITTEN_BEFORE_CHANGED); {-3} at the
# key's quota, {-2} at the cap, {-4} when the window's ring is not as its rows assumed (nothing
# written). The namespace's set is counted in the same script as the session is created: the
# quota is exact across replicas. Only the revision is read to compare: the record is fetched
# only to answer a lost race.
_WINDOW_CHECK, _WINDOW_WRITE = window_script_parts(key=5, at=9, ttl=4)
_MOVED_ON, _READ_REVISION, _KEPT_TOKENS = write_token_script_parts(token=8, window=5)
# A Lua function of its keys and arguments (its parameters shadow the script's KEYS and ARGV), so
# that one definition serves a session's script and the script of many sessions.
_COMPARE_AND_SET_FUNCTION = (
    _MOVED_ON
    + """
local function compare_and_set(KEYS, ARGV)
"""
    + _READ_REVISION
    + """
if ARGV[1] == '0' then
  if current then return moved_on(KEYS, ARGV, current, tokens) end
  local oldest = tonumber(ARGV[3]) - tonumber(ARGV[4]) / 1000
  local quota = tonumber(ARGV[7])
  if quota > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', oldest)
    if redis.call('ZCARD', KEYS[4]) >= quota then return {-3} end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', oldest)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {-2} end
elseif current ~= ARGV[1] then
  return moved_on(KEYS, ARGV, current, tokens)
end
"""
    + _WINDOW_CHECK
    + f"""
local clock = redis.call('TIME')
local revision = math.max(
  tonumber(redis.call('GET', KEYS[2]) or '0') + 1, clock[1] * 1000000 + clock[2])
-- Written as digits, whatever form a Redis version gives a Lua number passed as an argument.
local digits = string.format('%d', revision)
redis.call('SET', KEYS[2], digits)
redis.call('HSET', KEYS[1], 'rev', digits, 'rec', ARGV[2], 'tok', {_KEPT_TOKENS})
redis.call('PEXPIRE', KEYS[1], ARGV[4])
"""
    + _WINDOW_WRITE
    + """
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[6])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return {1, revision}
end
"""
)
_COMPARE_AND_SET = _COMPARE_AND_SET_FUNCTION + "return compare_and_set(KEYS, ARGV)"
# Many sessions' compare-and-sets in one call (/predict/many, /stream's batches), each as its own
# call would be: KEYS, five per session, in order; ARGV, per session its number of arguments then
# them. Returns each session's answer, in order.
_SESSION_KEYS = 5
# Sessions a call of that script takes at most: Redis runs a script to its end with every other
# client waiting, so a large request goes as several calls (in one pipeline), each short.
_SESSIONS_PER_SCRIPT = 128
_COMPARE_AND_SET_MANY = (
    _COMPARE_AND_SET_FUNCTION
    + f"""
local answers, key, at = {{}}, 0, 1
while at <= #ARGV do
  local count = tonumber(ARGV[at])
  local keys, args = {{}}, {{}}
  for i = 1, {_SESSION_KEYS} do keys[i] = KEYS[key + i] end
  for i = 1, count do args[i] = ARGV[at + i] end
  answers[#answers + 1] = compare_and_set(keys, args)
  key, at = key + {_SESSION_KEYS}, at + count + 1
end
return answers
"""
)

_DELETE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
return redis.call('DEL', KEYS[1])
"""


class RedisStore(OptimisticRedisStore):
    """Session records in Redis, shared by every replica."""

    name = "redis"
    computes_off_event_loop = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl_s: float,
        max_sessions: int,
        min_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        attempts: int = DEFAULT_CAS_ATTEMPTS,
        clock: Callable[[], float] = time.time,
        quotas: Quotas = no_quotas,
        history: int = 0,
    ) -> None:
        self._url = url
        self._quotas = quotas
        self._ttl_ms = int(ttl_s * 1000)
        self._max_sessions = max_sessions
        self._min_replicas = min_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._attempts = attempts
        self._clock = clock
        self._prefix = prefix
        self._revision_key = f"{prefix}:revision"
        self._live_key = f"{prefix}:live"
        self._client = pack_in_c(aioredis.Redis.from_url(url, **client_options()))
        self._compare_and_set_script = self._client.register_script(_COMPARE_AND_SET)
        self._compare_and_set_many = self._client.register_script(_COMPARE_AND_SET_MANY)
        self._confirmable_read = self._client.register_script(CONFIRMABLE_READ)
        self._read_script = self._client.register_script(READ)
        self._history = history
        # This replica's last view of sessions it served: one round trip per step instead of
        # two while no other replica touches the session; a record, or a row for those
        # stepped in place (feed_in_place).
        # No more rows than sessions may live: the rows' arrays, allocated for that many, never
        # grow (a copy on the event loop) for rows of sessions that expired meanwhile.
        self._rows = CachedRows(min(max_sessions, CACHED_ROWS_LIMIT))
        self._cache = RecordCache(max_sessions, self._rows)
        self._compiling = StepRowsCompiling()
        self._stepping: set[str] = set()  # the sessions being stepped in place
        self._local_queue = KeyedLocks()
        self._delete = self._client.register_script(_DELETE)

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
        """Feed one value to each of these sessions (distinct keys) of ``forecaster`` in one
        compiled call and one pipeline of compare-and-sets, as session_rules.feed and
        ``apply`` would. Left out, for the record path: sessions this replica has no view of
        (neither a row nor a cached record: the record path reads them, and the next request
        finds them cached), new ones (the cap and quotas), under another model version or
        other settings, sent a step that is not their own (a retry or a conflict), and those
        another replica changed since (their compare-and-set fails: the row is dropped, and
        the record path starts from what Redis answered). Off with ``min_replicas``: each write
        then waits for its own confirmation. ``capacity``: the history window's
        (FORECAST_SESSION_HISTORY), the store's own."""
        if self._min_replicas or capacity != self._history or not self._compiling.ready():
            return Stepped.nothing()
        async with self._local_queue.hold_all(keys):
            self._stepping.update(keys)
            try:
                return await self._feed_in_place_held(keys, values, steps, forecaster, policy, now)
            finally:
                self._stepping.difference_update(keys)

    async def _feed_in_place_held(
        self,
        keys: Sequence[str],
        values: Sequence[float],
        steps: Sequence[int | None],
        forecaster: Forecaster,
        policy: IntervalPolicy,
        now: float,
    ) -> Stepped:
        cached = self._rows
        rows = cached.rows_of(forecaster, policy, self._history, self._max_sessions)
        chosen = self._rows_to_step(keys, steps, rows, now)
        if not chosen:
            return Stepped.nothing()
        indexes = [index for index, _, _ in chosen]
        which = np.array([row for _, row, _ in chosen], dtype=np.int64)
        # Rings written whole: a window not full before the step (its ring in Redis is of
        # another size), and a session made a row now (its ring may be of another size too:
        # written before FORECAST_SESSION_HISTORY changed).
        whole = (rows.columns.counts[which] != self._history + 1) | np.array(
            [adopted for _, _, adopted in chosen]
        )
        stepped_keys = [keys[index] for index in indexes]
        try:
            stepped = rows.step(indexes, which.tolist(), [values[index] for index in indexes], now)
            calls = [
                (self._session_keys(key), args)
                for key, args in zip(
                    stepped_keys, self._rows_args(rows, which, whole, stepped_keys), strict=True
                )
            ]
            replies = await self._send_scripted(calls)
        except BaseException as error:  # written or not, unknown: Redis keeps the truth
            for key in stepped_keys:
                cached.forget(key)
            if isinstance(error, self._failures):
                raise unavailable(self._url, str(error)) from None
            raise
        kept: list[int] = []
        revisions = rows.columns.revisions
        for position, ((index, row, _), reply) in enumerate(zip(chosen, replies, strict=True)):
            key = keys[index]
            if reply[0] == 1:  # written: the step is applied, whatever became of the row since
                kept.append(position)
                entry = cached.peek(key)
                if entry is not None and entry.rows is rows and entry.row == row:
                    revisions[row] = int(reply[1])
                continue
            cached.forget(key)
            if reply[0] == WRITTEN_BEFORE_CHANGED:  # written by a resend's first run: the step
                # is applied; the record path goes on from what Redis holds now
                kept.append(position)
            if reply[0] in (0, WRITTEN_BEFORE_CHANGED):  # what Redis holds now, whoever wrote it
                self._cache.remember(key, record_from(reply[1], reply[2], reply[3]))
        return stepped if len(kept) == len(chosen) else stepped.only(kept)

    def _rows_to_step(
        self, keys: Sequence[str], steps: Sequence[int | None], rows: SessionRows, now: float
    ) -> list[tuple[int, int, bool]]:
        """The sessions among ``keys`` to step in place, as (position in ``keys``, row, made a
        row now), in ``keys``' order; sessions with a cached record made rows."""
        cached = self._rows
        oldest = now - self._ttl_ms / 1000
        chosen: list[tuple[int, int, bool]] = []
        for index, key in enumerate(keys):
            step = steps[index]
            entry = cached.get(key)
            if entry is not None:
                if not cached.outlived(key, entry, rows, oldest) and (
                    step is None or step == rows.step_of(entry.row)
                ):
                    chosen.append((index, entry.row, False))
                continue
            record = self._cache.get(key)
            if record is None or record.last_used_at <= oldest:
                continue
            if step is not None and step != record.step:
                continue
            row = cached.adopt(key, 0, record, rows, self._stepping)
            if row is not None:
                self._cache.take(key)
                chosen.append((index, row, True))
        return chosen

    def _rows_args(
        self, rows: SessionRows, which: IntArray, whole: npt.NDArray[np.bool_], keys: list[str]
    ) -> list[list[EncodableT]]:
        """The compare-and-set script's arguments for each stepped row in ``which``, the
        session ``keys`` at the same place (its window written ``whole``, or its step's two
        rows), as ``_call`` builds them for a record."""
        records = rows_records(rows, which, rows.columns.revisions[which])
        count = len(records)
        windows: list[list[EncodableT]] = [["N"]] * count
        if self._history > 0:
            ring_size = (self._history + 1) * row_size(rows.columns.windows.shape[2])
            (rewritten,) = np.nonzero(whole)
            for position, ring in zip(
                rewritten.tolist(), rows_rings(rows, which[rewritten]), strict=True
            ):
                assert ring is not None  # a window is kept
                windows[position] = ["F", ring]
            (moved,) = np.nonzero(~whole)
            for position, pieces in zip(
                moved.tolist(), rows_step_pieces(rows, which[moved]), strict=True
            ):
                windows[position] = ["R", ring_size, *pieces]
        used = rows.columns.used[which].tolist()
        previous = rows.columns.revisions[which].tolist()
        return [
            [
                revision,
                record,
                repr(last_used),
                self._ttl_ms,
                self._max_sessions,
                key,
                0,
                token,
                *window,
            ]
            for revision, record, last_used, window, key, token in zip(
                previous, records, used, windows, keys, write_tokens(count), strict=True
            )
        ]

    def rows_in_use(self) -> int:
        """Sessions kept as rows now (stepped in place while no other path changed them)."""
        return len(self._rows)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:s:{key}"

    def _namespace_key(self, namespace: str) -> str:
        return f"{self._prefix}:ns:{namespace}"

    def _window_key(self, key: str) -> str:
        return f"{self._prefix}:w:{key}"

    # -- what OptimisticRedisStore asks of this store ---------------------------------------------

    async def _compare_and_set_call(
        self,
        key: str,
        expected: SessionRecord | None,
        new: SessionRecord,
        *,
        whole_window: bool = False,
    ) -> CompareAndSet:
        """The script counts a new session against its key's quota (result -3) and the cap
        (result -2) in the same call that writes it, /predict/many's pipelined items too."""
        quota = self._quotas(namespace_of(key)) if expected is None else None
        return self._call(key, expected, new, quota, whole_window)

    def _session_keys(self, key: str) -> list[str]:
        """The compare-and-set script's keys for the session ``key``."""
        return [
            self._key(key),
            self._revision_key,
            self._live_key,
            self._namespace_key(namespace_of(key)),
            self._window_key(key),
        ]

    def _call(
        self,
        key: str,
        expected: SessionRecord | None,
        new: SessionRecord,
        quota: int | None = None,
        whole_window: bool = False,
    ) -> CompareAndSet:
        keys = self._session_keys(key)
        window = window_write(expected, new, self._history, whole=whole_window)
        args: list[EncodableT] = [
            expected.revision if expected is not None else 0,
            encode_record(new, window_apart=True),
            repr(new.last_used_at),
            self._ttl_ms,
            self._max_sessions,
            key,
            quota or 0,
            write_tokens(1)[0],
            *window.args,
        ]
        return CompareAndSet(keys, args, None, quota, kept_record(new, window))

    def _pipeline(self) -> Pipeline:
        return self._client.pipeline(transaction=False)

    async def _send_compare_and_sets(self, calls: list[CompareAndSet]) -> list[Any]:
        return await self._send_scripted([(call.keys, call.args) for call in calls])

    async def _send_scripted(self, calls: list[tuple[list[str], list[EncodableT]]]) -> list[Any]:
        """Each call's reply, in order: the compare-and-sets (keys, arguments) as script calls
        of up to ``_SESSIONS_PER_SCRIPT`` sessions each, in one pipeline: a command to pack and
        a reply to parse per chunk, not per session (each session's keys are on this one
        node)."""
        script = self._compare_and_set_many
        commands: list[list[EncodableT]] = []
        for start in range(0, len(calls), _SESSIONS_PER_SCRIPT):
            keys: list[EncodableT] = []
            args: list[EncodableT] = []
            for call_keys, call_args in calls[start : start + _SESSIONS_PER_SCRIPT]:
                keys += call_keys
                args.append(len(call_args))
                args += call_args
            commands.append([len(keys), *keys, *args])
        replies = await self._evalsha_each(script, commands)
        unloaded = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unloaded:  # Redis restarted: its script cache is empty. Those calls ran nothing, so
            # they alone are sent again (the others may have written).
            await self._client.script_load(script.script)
            again = await self._evalsha_each(script, [commands[i] for i in unloaded])
            for index, reply in zip(unloaded, again, strict=True):
                replies[index] = reply
        answers: list[Any] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply  # the chunks before it may be written: a resend replays them
            answers += reply
        return answers

    async def _run_confirmed(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[EncodableT],
        needs_confirmation: Callable[[Any], bool],
    ) -> Any:
        """Run ``script``, then WAIT on the same connection; the script's result, or
        StoreUnavailable when it ``needs_confirmation`` and too few replicas confirmed within
        the timeout."""
        for _attempt in range(2):
            pipe: Pipeline = self._client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.wait(self._min_replicas, self._wait_timeout_ms)
            result, confirmed = await pipe.execute(raise_on_error=False)
            if not isinstance(result, NoScriptError):
                break
            await self._client.script_load(script.script)  # Redis restarted: cache empty
        if isinstance(result, RedisError):
            raise result
        if needs_confirmation(result):
            require_replicas(confirmed, self._min_replicas, self._wait_timeout_ms, self._url)
        return result

    async def delete(self, key: str) -> bool:
        self._cache.forget(key)
        keys = [
            self._key(key),
            self._live_key,
            self._namespace_key(namespace_of(key)),
            self._window_key(key),
        ]
        try:
            if self._min_replicas:
                deleted = await self._run_confirmed(self._delete, keys, [key], session_removed)
            else:
                deleted = await self._delete(keys=keys, args=[key])
        except RedisError as error:
            raise unavailable(self._url, error) from None
        return int(deleted) > 0

    async def count(self) -> int:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.zremrangebyscore(self._live_key, "-inf", self._clock() - self._ttl_ms / 1000)
            pipe.zcard(self._live_key)
            _removed, live = await pipe.execute()
        except RedisError as error:
            raise unavailable(self._url, error) from None
        return int(live)

    async def list_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        position, skip = parse_scan_cursor(cursor)
        pattern = glob_escaped(self._key(prefix)) + "*"

        async def scan(at: int) -> tuple[int, list[str]]:
            following, keys = await self._client.scan(at, match=pattern, count=SCAN_COUNT)
            return int(following), [key_text(key) for key in keys]

        try:
            keys, following = await scan_page(scan, position, skip, limit)
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, ["rev", "rec"])
            rows = await pipe.execute()
        except RedisError as error:
            raise unavailable(self._url, error) from None
        start = len(self._key(""))
        page = [
            (key[start:], record)
            for key, (revision, data) in zip(keys, rows, strict=True)
            if (record := record_from(revision, data, None)) is not None  # no window needed
        ]
        return page, following

    async def namespace_counts(self) -> dict[str, int]:
        prefix = self._namespace_key("")
        oldest = self._clock() - self._ttl_ms / 1000
        counts: dict[str, int] = {}
        try:
            async for name in self._client.scan_iter(match=f"{prefix}*", count=1000):
                namespace = (name.decode() if isinstance(name, bytes) else name)[len(prefix) :]
                live = await self._client.zcount(name, f"({oldest}", "+inf")
                if live:
                    counts[namespace] = int(live)
        except RedisError as error:
            raise unavailable(self._url, error) from None
        return counts

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as error:
            raise unavailable(self._url, error) from None

    async def close(self) -> None:
        await self._client.aclose()
