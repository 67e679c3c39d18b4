"""Redis Cluster session store: every per-request operation touches one hash slot.

A session is a hash ``{prefix}:s:{{key}}`` (the braces are the hash tag: the session's own slot)
holding its encoded record and its revision, and a string ``{prefix}:w:{{key}}`` in the same slot
holding its history window as a ring (:mod:`app.window_ring`). Nothing is shared between
sessions on the hot path:

- **Compare-and-set** on a revision drawn by the writing replica (:func:`next_revision`): it
  grows with every write to the session and starts from the clock (plus random bits) after a
  delete or expiry, so a reader of an old session can never see its revision come back.
- **The cap is per shard.** A new session is admitted while its primary holds fewer than
  ``ceil(max_sessions / primaries)`` sessions' keys (``DBSIZE``, counted inside the script; two
  keys a session when sessions keep a window), so no key is
  shared by all sessions. The cluster must be the service's own, and keys that expired but that
  Redis has not yet reclaimed still count (README, "Sessions and stores").
- **Per-key quotas** without a key shared per request: each namespace has a sorted set of its
  sessions (``{prefix}:ns:{{namespace}}``, a slot of its own) that only a session's *creation*
  and *deletion* touch, never a step. A creation first reserves its place in that set (a
  script: admitted while the set holds fewer than the quota), then writes the session. Members
  are not refreshed by steps, so at the quota the members older than the TTL are checked
  against the cluster (does the session still exist, and when was it last used) and the gone
  ones removed before refusing. A key can never hold more than its quota; a replica killed
  between the reservation and the write leaves a place taken until the TTL has passed.
- **Replica confirmation.** With ``min_replicas``, the write and a ``WAIT`` go to the session's
  primary on one connection (``WAIT`` counts that connection's writes); a read that may decide
  an answer rewrites the key's expiry unchanged first, so its ``WAIT`` covers whatever was
  written to the session before.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.typing import EncodableT

from app.auth import namespace_of
from app.errors import InvalidCursor, SessionQuotaReached
from app.session_rules import SessionRecord
from app.settings import DEFAULT_CAS_ATTEMPTS
from app.stores.base import KeyedLocks, Quotas, no_quotas
from app.stores.record_codec import encode_record
from app.stores.redis_common import (
    CONFIRMABLE_READ,
    READ,
    SCAN_COUNT,
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

# KEYS: the session hash, its window (app.window_ring; same slot). ARGV: expected
# revision ("0": must not exist), new revision, record, ttl (ms), keys a primary may hold before
# it refuses new sessions, the call's write token (redis_common.write_tokens), then the window's
# (redis_common.window_write).
# Returns {1} when written; {0, revision, record, window} with what is there now when the
# revision moved on (so the caller can retry without another read), or {3, ...} the same when an
# earlier run of this call wrote (a resend: redis_common.WRITTEN_BEFORE_CHANGED); {-2} at the
# shard's cap; {-4} when the window's ring is not as its rows assumed (nothing written).
_WINDOW_CHECK, _WINDOW_WRITE = window_script_parts(key=2, at=7, ttl=4)
_MOVED_ON, _READ_REVISION, _KEPT_TOKENS = write_token_script_parts(token=6, window=2)
_COMPARE_AND_SET = (
    _MOVED_ON
    + _READ_REVISION
    + """
if ARGV[1] == '0' then
  if current then return moved_on(KEYS, ARGV, current, tokens) end
  if redis.call('DBSIZE') >= tonumber(ARGV[5]) then return {-2} end
elseif current ~= ARGV[1] then
  return moved_on(KEYS, ARGV, current, tokens)
end
"""
    + _WINDOW_CHECK
    + f"""
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'rec', ARGV[3], 'tok', {_KEPT_TOKENS})
redis.call('PEXPIRE', KEYS[1], ARGV[4])
"""
    + _WINDOW_WRITE
    + """
return {1}
"""
)

# KEYS: the namespace's sorted set. ARGV: member, now (s), quota, last use before which a member
# must be checked, how many such members to return. Returns {1} when the member has its place
# (new or already there); else {0, members to check...}.
_RESERVE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return {1}
end
return {0, unpack(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, ARGV[5]))}
"""
# Members checked per round at the quota, and rounds before refusing.
_CHECK_BATCH = 256
_CHECK_ROUNDS = 4

# What a cluster call raises when a node fails: redis-py's errors, its cluster errors (a slot no
# node serves, mid-failover), and uvloop's RuntimeError for a write on a connection that redis-py
# closed meanwhile (it closes them all on a topology change).
_FAILURES = (RedisError, RedisClusterException, RuntimeError)

# Random low bits under the clock's milliseconds: two writers that recreate a session in the
# same millisecond still draw different revisions.
_RANDOM_BITS = 20


def next_revision(previous: int) -> int:
    """A revision above ``previous`` that no earlier incarnation of the session can have held."""
    drawn = (time.time_ns() // 1_000_000) << _RANDOM_BITS | random.getrandbits(_RANDOM_BITS)
    return max(previous + 1, drawn)


class RedisClusterStore(OptimisticRedisStore):
    """Session records in a Redis Cluster, shared by every replica of the service."""

    name = "redis"
    _failures = _FAILURES
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
        quotas: Quotas = no_quotas,
        history: int = 0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._quotas = quotas
        self._ttl_ms = int(ttl_s * 1000)
        self._max_sessions = max_sessions
        self._min_replicas = min_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._attempts = attempts
        self._client = RedisCluster.from_url(url, **client_options())
        self._compare_and_set_script = self._client.register_script(_COMPARE_AND_SET)
        self._confirmable_read = self._client.register_script(CONFIRMABLE_READ)
        self._read_script = self._client.register_script(READ)
        self._delete = self._client.register_script("return redis.call('DEL', KEYS[1], KEYS[2])")
        self._history = history
        # A session with a window is two keys (its hash and its window): what DBSIZE counts.
        self._keys_per_session = 2 if history > 0 else 1
        self._reserve = self._client.register_script(_RESERVE)
        self._cache = RecordCache(max_sessions)
        self._local_queue = KeyedLocks()
        self._refresh_lock = asyncio.Lock()

    def _key(self, key: str) -> str:
        return f"{self._prefix}:s:{{{key}}}"

    def _namespace_key(self, namespace: str) -> str:
        return f"{self._prefix}:ns:{{{namespace}}}"

    def _window_key(self, key: str) -> str:
        return f"{self._prefix}:w:{{{key}}}"

    async def _take_place(self, key: str) -> int | None:
        """Reserve the new session ``key`` a place in its namespace's quota; the quota (None:
        none), or SessionQuotaReached once the members past the TTL proved to be live."""
        namespace = namespace_of(key)
        quota = self._quotas(namespace)
        if quota is None:
            return None
        nkey = self._namespace_key(namespace)
        for _round in range(_CHECK_ROUNDS):
            now = time.time()
            stale = repr(now - self._ttl_ms / 1000)
            result = await self._reserve(
                keys=[nkey], args=[key, repr(now), quota, stale, _CHECK_BATCH]
            )
            if result[0] == 1:
                return quota
            members = [m.decode() if isinstance(m, bytes) else str(m) for m in result[1:]]
            if not members:
                break
            await self._recheck(nkey, members, now)
        raise SessionQuotaReached(quota)

    async def _recheck(self, nkey: str, members: list[str], now: float) -> None:
        """Drop members whose session is gone; give live ones their real last use."""
        pipe = self._client.pipeline()
        for member in members:
            pipe.pttl(self._key(member))
        remaining = await pipe.execute()
        # PTTL: -2 the session is gone; otherwise its expiry tells when it was last used.
        gone = [m for m, ms in zip(members, remaining, strict=True) if int(ms) == -2]
        live = {
            m: now - (self._ttl_ms - max(0, int(ms))) / 1000
            for m, ms in zip(members, remaining, strict=True)
            if int(ms) != -2
        }
        if gone:
            await self._client.zrem(nkey, *gone)
        if live:
            await self._client.zadd(nkey, live)

    async def _give_back(self, key: str) -> None:
        try:
            await self._client.zrem(self._namespace_key(namespace_of(key)), key)
        except _FAILURES:
            pass  # a place left taken is found free again at the quota

    # -- what OptimisticRedisStore asks of this store ---------------------------------------------

    async def _compare_and_set_call(
        self,
        key: str,
        expected: SessionRecord | None,
        new: SessionRecord,
        *,
        whole_window: bool = False,
    ) -> CompareAndSet:
        quota = None
        if expected is None:
            await self._client.initialize()  # the shard cap needs the primaries known
            try:
                quota = await self._take_place(key)
            except _FAILURES as error:
                raise unavailable(self._url, str(error)) from None
        return self._call(key, expected, new, quota, whole_window)

    def _call(
        self,
        key: str,
        expected: SessionRecord | None,
        new: SessionRecord,
        quota: int | None = None,
        whole_window: bool = False,
    ) -> CompareAndSet:
        previous = expected.revision if expected is not None else 0
        revision = next_revision(previous)
        window = window_write(expected, new, self._history, whole=whole_window)
        args: list[EncodableT] = [
            previous,
            revision,
            encode_record(new, window_apart=True),
            self._ttl_ms,
            self._shard_cap() if expected is None else 0,
            write_tokens(1)[0],
            *window.args,
        ]
        keys = [self._key(key), self._window_key(key)]
        return CompareAndSet(keys, args, revision, quota, kept_record(new, window))

    async def _refused(self, key: str, call: CompareAndSet) -> None:
        if call.quota is not None:
            await self._give_back(key)  # the place taken for a session the cap refused

    def _pipeline(self) -> ClusterPipeline:
        # redis-py's cluster pipeline sends each EVALSHA to the node of its key's slot (it
        # reads the keys from the call itself), one batch per node, the nodes concurrently.
        return self._client.pipeline()

    def _shard_cap(self) -> int:
        """Keys a primary may hold: its share of the sessions, in keys."""
        sessions = math.ceil(self._max_sessions / max(1, len(self._client.get_primaries())))
        return sessions * self._keys_per_session

    async def _run_confirmed(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[EncodableT],
        needs_confirmation: Callable[[Any], bool],
    ) -> Any:
        """Run ``script`` on the primary of ``keys`` (one slot), then WAIT on the same
        connection; the script's result, or StoreUnavailable when it ``needs_confirmation``
        and too few replicas confirmed within the timeout."""
        await self._client.initialize()
        try:
            node = self._client.get_node_from_key(keys[0])
        except RedisClusterException:
            await self._refresh_topology()
            raise
        assert node is not None  # None only when asking for a replica
        for _attempt in range(2):
            result, confirmed = await self._script_then_wait(node, script, keys, args)
            if isinstance(result, NoScriptError):
                # A promoted replica starts with an empty script cache.
                await self._client.script_load(script.script)
                continue
            break
        if isinstance(result, RedisError):
            # Moved or mid-failover: learn the topology again for the next request.
            await self._refresh_topology()
            raise result
        if needs_confirmation(result):
            require_replicas(confirmed, self._min_replicas, self._wait_timeout_ms, self._url)
        return result

    async def _script_then_wait(
        self, node: ClusterNode, script: AsyncScript, keys: list[str], args: list[EncodableT]
    ) -> tuple[Any, Any]:
        # Straight to the node, one connection, no client-side retry: redis-py's own retry
        # would resend the script alone, and a WAIT counted on another connection means nothing.
        commands = [
            PipelineCommand(0, "EVALSHA", script.sha, len(keys), *keys, *args),
            PipelineCommand(1, "WAIT", self._min_replicas, self._wait_timeout_ms),
        ]
        try:
            await node.execute_pipeline(commands)
        except (RedisError, OSError, RuntimeError) as error:
            # RuntimeError: uvloop's answer to a write on a connection the node dropped.
            await self._refresh_topology()
            raise RedisConnectionError(f"{node.name}: {error}") from None
        return commands[0].result, commands[1].result

    async def _refresh_topology(self) -> None:
        """Ask the cluster again which node serves which slot (after a failover or a move)."""
        async with self._refresh_lock:
            try:
                await self._client.nodes_manager.initialize()
            except _FAILURES:
                pass  # the next request asks again

    async def delete(self, key: str) -> bool:
        self._cache.forget(key)
        keys = [self._key(key), self._window_key(key)]
        try:
            if self._min_replicas:
                deleted = await self._run_confirmed(self._delete, keys, [], session_removed)
            else:
                deleted = await self._delete(keys=keys)
        except _FAILURES as error:
            raise unavailable(self._url, str(error)) from None
        await self._give_back(key)
        return int(deleted) > 0

    async def namespace_counts(self) -> dict[str, int]:
        """Places taken per namespace: its sessions, plus any not yet found expired."""
        prefix, counts = f"{self._prefix}:ns:{{", {}
        try:
            # redis-py scans every primary in turn.
            async for name in self._client.scan_iter(match=f"{prefix}*", count=1000):
                text = name.decode() if isinstance(name, bytes) else str(name)
                counts[text[len(prefix) : -1]] = int(await self._client.zcard(text))
        except _FAILURES as error:
            raise unavailable(self._url, str(error)) from None
        return {namespace: count for namespace, count in counts.items() if count}

    async def count(self) -> int:
        """Keys on the primaries, in sessions (a session with a window is two keys): the
        sessions, plus expired ones Redis has not reclaimed yet."""
        try:
            sizes = [
                await self._client.execute_command("DBSIZE", target_nodes=node)
                for node in self._client.get_primaries()
            ]
        except _FAILURES as error:
            raise unavailable(self._url, str(error)) from None
        return math.ceil(sum(int(size) for size in sizes) / self._keys_per_session)

    async def list_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        # Each primary's keys in turn (in the order of their names), SCAN by SCAN; the cursor
        # is the primary's place in that order, then SCAN's position and how much of its batch
        # was shown.
        node_part, _, rest = (cursor or "0:0:0").partition(":")
        if not node_part.isdigit():
            raise InvalidCursor(cursor or "")
        index = int(node_part)
        position, skip = parse_scan_cursor(rest)
        pattern = glob_escaped(f"{self._prefix}:s:{{{prefix}") + "*"
        keys: list[str] = []
        try:
            await self._client.initialize()
            primaries = sorted(self._client.get_primaries(), key=lambda node: node.name)
            while index < len(primaries) and len(keys) < limit:
                node = primaries[index]

                async def scan(at: int, node: ClusterNode = node) -> tuple[int, list[str]]:
                    # With a target node, redis-py answers ({node name: position}, keys).
                    positions, found = await self._client.scan(
                        at, match=pattern, count=SCAN_COUNT, target_nodes=node
                    )
                    following = cast(dict[str, int], positions)
                    return int(next(iter(following.values()))), [key_text(key) for key in found]

                found, following = await scan_page(scan, position, skip, limit - len(keys))
                keys += found
                if following is None:
                    index, position, skip = index + 1, 0, 0
                else:
                    position, skip = parse_scan_cursor(following)
            pipe = self._client.pipeline()
            for key in keys:
                pipe.hmget(key, ["rev", "rec"])
            rows = await pipe.execute() if keys else []
        except _FAILURES as error:
            raise unavailable(self._url, str(error)) from None
        start = len(f"{self._prefix}:s:{{")
        page = [
            (key[start:-1], record)
            for key, (revision, data) in zip(keys, rows, strict=True)
            if (record := record_from(revision, data, None)) is not None  # no window needed
        ]
        following_cursor = None if index >= len(primaries) else f"{index}:{position}:{skip}"
        return page, following_cursor

    async def ping(self) -> None:
        try:
            await self._client.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)
        except _FAILURES as error:
            raise unavailable(self._url, str(error)) from None

    async def close(self) -> None:
        await self._client.aclose()
