"""The session-store interface, and the one compare-and-set loop the optimistic stores share."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import anyio.to_thread

from app.errors import ServiceError, SessionBusy
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rows import Stepped
from app.session_rules import SessionRecord

T = TypeVar("T")

# namespace -> the session quota of the key that owns it (None: no quota of its own). Asked only
# when a session is created, so it sees keys rotated in or out at once.
Quotas = Callable[[str], int | None]


def no_quotas(_namespace: str) -> int | None:
    """No per-key quota: the service's cap alone."""
    return None


# compute(record or None) -> (record to write or None for no change, answer). Pure, raises
# domain errors to refuse; it may run more than once when another writer got there first.
Compute = Callable[[SessionRecord | None], tuple[SessionRecord | None, T]]


class SessionStore(Protocol):
    """Keeps session records; applies each change atomically across threads and processes."""

    name: str
    # True when ``apply`` runs every compute in a thread of its own (never on the event loop).
    computes_off_event_loop: bool

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        """Read, compute, write back atomically; ``offload`` computes in a worker thread."""
        ...

    async def apply_many(
        self, items: Sequence[tuple[str, Compute[T]]], *, offload: bool = False
    ) -> list[T | ServiceError]:
        """``apply`` for several distinct keys in as few round trips as the store can: one
        answer per item, in order, a refusal (conflict, cap, ...) in place of its answer."""
        ...

    async def get(self, key: str) -> SessionRecord | None:
        """The live record, or None (unknown or expired)."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove a session; True if it existed."""
        ...

    async def count(self) -> int:
        """Live sessions."""
        ...

    async def list_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        """Live sessions whose key starts with ``prefix``, at most ``limit`` at a time: the keys
        with their records, and the cursor of the next page (None: no more). A cursor is the
        store's own, opaque to callers; a session created or expired meanwhile may or may not
        show, one that lives throughout shows (at least once on Redis, whose SCAN may repeat)."""
        ...

    async def namespace_counts(self) -> dict[str, int]:
        """Live sessions per namespace (namespaces without any may be left out)."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store can serve."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class FeedsInPlace(Protocol):
    """A store that can step many of its sessions at once without records (memory, SQLite)."""

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
        """One value for each of these sessions (distinct keys), as session_rules.feed would
        apply it; the sessions left out must take ``apply`` instead."""
        ...


class _AppliesOne(Protocol):
    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T: ...


async def apply_each(
    store: _AppliesOne, items: Sequence[tuple[str, Compute[T]]], *, offload: bool = False
) -> list[T | ServiceError]:
    """``apply_many`` one key at a time (concurrently): for stores or settings that have no
    cheaper way, and for items that the batched path hands back."""

    async def one(key: str, compute: Compute[T]) -> T | ServiceError:
        try:
            return await store.apply(key, compute, offload=offload)
        except ServiceError as error:
            return error

    return list(await asyncio.gather(*(one(key, compute) for key, compute in items)))


def compute_each(
    computes: Sequence[Compute[T]], records: Sequence[SessionRecord | None]
) -> list[tuple[SessionRecord | None, T] | ServiceError]:
    """Run each compute on its record; a refusal in place of its result (for a worker thread)."""
    results: list[tuple[SessionRecord | None, T] | ServiceError] = []
    for compute, record in zip(computes, records, strict=True):
        try:
            results.append(compute(record))
        except ServiceError as error:
            results.append(error)
    return results


class KeyedLocks:
    """One FIFO asyncio lock per key, dropped when nobody holds or waits for it.

    A store shared between processes uses compare-and-set for correctness; queueing a process's
    own requests for one session behind each other keeps them from racing each other's CAS, so
    a hot session costs one round of retries per competing replica, not per request.
    """

    def __init__(self) -> None:
        # key -> (lock, holders and waiters)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def hold(self, key: str) -> _KeyHold:
        """``async with locks.hold(key):`` runs the block alone among this key's holders."""
        return _KeyHold(self._locks, key)

    def hold_all(self, keys: Sequence[str]) -> _KeysHold:
        """``async with locks.hold_all(keys):`` holds every one of ``keys`` (distinct), taken in
        sorted order so that two holders of overlapping sets cannot wait for each other."""
        return _KeysHold([_KeyHold(self._locks, key) for key in sorted(keys)])


class _KeysHold:
    __slots__ = ("_held", "_holds")

    def __init__(self, holds: list[_KeyHold]) -> None:
        self._holds = holds
        self._held = 0

    async def __aenter__(self) -> None:
        try:
            for hold in self._holds:
                await hold.__aenter__()
                self._held += 1
        except BaseException:
            await self.__aexit__()
            raise

    async def __aexit__(self, *_exc: object) -> None:
        for hold in reversed(self._holds[: self._held]):
            await hold.__aexit__()
        self._held = 0


class _KeyHold:
    # A class, not @asynccontextmanager: this runs on every request, and a generator-based
    # context manager costs measurably more there.
    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        lock, users = self._locks.get(self._key) or (asyncio.Lock(), 0)
        self._locks[self._key] = (lock, users + 1)
        self._lock = lock
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *_exc: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._locks[self._key]
        if users == 1:
            del self._locks[self._key]
        else:
            self._locks[self._key] = (lock, users - 1)


async def pause_before_retry(attempt: int) -> None:
    """A short jittered pause, growing with the attempt, so contending writers spread out."""
    await asyncio.sleep(random.uniform(0, 0.0005 * min(attempt, 20)))


class OptimisticBackend(Protocol):
    """What :func:`apply_optimistically` needs from a store that writes by compare-and-set."""

    def cached(self, key: str) -> SessionRecord | None:
        """This process's last view of the session, possibly stale; None if it has none."""
        ...

    async def read(self, key: str) -> SessionRecord | None:
        """What the store holds now (None: no live session)."""
        ...

    async def write_if_unchanged(
        self, key: str, expected: SessionRecord | None, new: SessionRecord
    ) -> tuple[bool, SessionRecord | None]:
        """Write ``new`` if the session is still ``expected``: (True, the record as written),
        else (False, what the store holds now)."""
        ...


async def apply_optimistically(
    backend: OptimisticBackend,
    key: str,
    compute: Compute[T],
    *,
    offload: bool,
    attempts: int,
) -> T:
    """Read, compute, write if unchanged; on a lost race compute again on what won.

    A cached record saves a read, but only a record the store itself returned may decide an
    answer without a write (a replay) or a refusal (a conflict): a cached one is first checked
    against the store. A lost compare-and-set returns the winning record, so the retry needs no
    extra read; later retries pause a little, so contending writers spread out.
    """
    record = backend.cached(key)
    trusted = record is None
    if trusted:
        record = await backend.read(key)
    for attempt in range(attempts):
        try:
            if offload:
                new, answer = await anyio.to_thread.run_sync(compute, record)
            else:
                new, answer = compute(record)
        except ServiceError:
            if trusted:
                raise
            record, trusted = await backend.read(key), True
            continue
        if new is None:
            if trusted:
                return answer
            record, trusted = await backend.read(key), True
            continue
        written, current = await backend.write_if_unchanged(key, record, new)
        if written:
            return answer
        record, trusted = current, True
        if attempt:
            await pause_before_retry(attempt)
    raise SessionBusy(attempts)
