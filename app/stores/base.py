"""The session-store interface, and the compare-and-set loop the optimistic stores share."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio.to_thread

from app.errors import SessionBusy
from app.sessions import SessionRecord

T = TypeVar("T")

# compute(record or None) -> (record to write or None for no change, answer). Pure, raises
# domain errors to refuse; it may run more than once when another writer got there first.
Compute = Callable[[SessionRecord | None], tuple[SessionRecord | None, T]]


class SessionStore(Protocol):
    """Keeps session records; applies each change atomically across threads and processes."""

    name: str

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        """Read, compute, write back atomically; ``offload`` computes in a worker thread."""
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

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store can serve."""
        ...

    async def close(self) -> None: ...


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


class _KeyHold:
    # A class, not @asynccontextmanager: this runs on every request, and the generator-based
    # context manager costs several microseconds more.
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


async def compare_and_set_loop(
    read: Callable[[], Awaitable[SessionRecord | None]],
    write: Callable[[SessionRecord | None, SessionRecord], Awaitable[bool]],
    compute: Compute[T],
    *,
    offload: bool,
    attempts: int,
) -> T:
    """Read, compute, write-if-unchanged; on a lost race read again, with a short jittered pause."""
    for attempt in range(attempts):
        record = await read()
        if offload:
            new, answer = await anyio.to_thread.run_sync(compute, record)
        else:
            new, answer = compute(record)
        if new is None or await write(record, new):
            return answer
        await pause_before_retry(attempt + 1)
    raise SessionBusy.after(attempts)
