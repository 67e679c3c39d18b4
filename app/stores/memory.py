"""In-process session store: for tests and throwaway runs (lost on restart, one process only)."""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import anyio.to_thread

from app.auth import namespace_of
from app.errors import ServiceError, SessionLimitReached, SessionQuotaReached
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rows import RowRef, RowsByModel, SessionRows, Stepped, StepRowsCompiling
from app.session_rules import SessionRecord
from app.settings import DEFAULT_CAS_ATTEMPTS
from app.stores.base import Compute, Quotas, T, apply_optimistically, compute_each, no_quotas


class MemoryStore:
    """Records in an OrderedDict kept in last-used order, so expiry pops from the front.

    Changes are compared by record identity (every write stores a new record object), so this
    store leaves ``revision`` as the rules computed it: nothing here can be fooled by a count
    that climbs back to an old value.

    Sessions that only ``/predict/many`` steps live as rows of app.session_rows instead (see
    :meth:`feed_in_place`); every other access turns such a row back into its record first.
    """

    name = "memory"
    computes_off_event_loop = False

    def __init__(
        self,
        ttl_s: float,
        max_sessions: int,
        attempts: int = DEFAULT_CAS_ATTEMPTS,
        clock: Callable[[], float] = time.time,
        quotas: Quotas = no_quotas,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_sessions = max_sessions
        self._quotas = quotas
        # Live records per namespace, kept with every insert and removal: the quota never scans.
        self._per_namespace: dict[str, int] = {}
        self._attempts = attempts
        self._clock = clock
        self._records: OrderedDict[str, SessionRecord | RowRef] = OrderedDict()
        # The rows of each (model version, interval policy, window capacity) in use.
        self._rows = RowsByModel()
        # No record expires before this time; checked per request instead of the oldest record.
        self._next_expiry = math.inf
        # Routes run on the event loop, but offloaded computes finish in worker threads.
        self._lock = threading.Lock()
        # Compiles the in-place step when a request first wants it.
        self._compiling = StepRowsCompiling()

    def _purge_expired(self, now: float) -> None:
        if now < self._next_expiry:
            return
        records = self._records
        self._next_expiry = math.inf
        while records:
            key, oldest = next(iter(records.items()))
            used = (
                oldest.rows.last_used(oldest.row)
                if isinstance(oldest, RowRef)
                else oldest.last_used_at
            )
            if used + self._ttl_s > now:
                self._next_expiry = used + self._ttl_s
                break
            del records[key]
            self._release(oldest)
            self._left(key)

    def _record(self, key: str) -> SessionRecord | None:
        """The session's record (a row turned back into one), or None; under the lock."""
        entry = self._records.get(key)
        if not isinstance(entry, RowRef):
            return entry
        record = entry.rows.record(entry.row)
        self._records[key] = record
        self._release(entry)
        return record

    def _release(self, entry: SessionRecord | RowRef) -> None:
        if isinstance(entry, RowRef):
            self._rows.release(entry.rows, entry.row)

    def _left(self, key: str) -> None:
        namespace = namespace_of(key)
        remaining = self._per_namespace[namespace] - 1
        if remaining:
            self._per_namespace[namespace] = remaining
        else:
            del self._per_namespace[namespace]

    def _read(self, key: str) -> SessionRecord | None:
        with self._lock:
            self._purge_expired(self._clock())
            return self._record(key)

    # -- OptimisticBackend, for computes that run in a worker thread --------------------------

    def cached(self, key: str) -> SessionRecord | None:
        return None  # reads are as cheap as a cache here

    async def read(self, key: str) -> SessionRecord | None:
        return self._read(key)

    async def write_if_unchanged(
        self, key: str, expected: SessionRecord | None, new: SessionRecord
    ) -> tuple[bool, SessionRecord | None]:
        with self._lock:
            current = self._record(key)
            if current is not expected:
                return False, current
            self._store(key, current, new, self._clock())
            return True, new

    def _store(
        self, key: str, current: SessionRecord | None, new: SessionRecord, now: float
    ) -> None:
        """Write under the lock; a new session must fit under its key's quota and the cap."""
        if current is None:
            self._purge_expired(now)  # expired sessions must not count against anyone
            namespace = namespace_of(key)
            quota = self._quotas(namespace)
            held = self._per_namespace.get(namespace, 0)
            if quota is not None and held >= quota:
                raise SessionQuotaReached(quota)
            if len(self._records) >= self._max_sessions:
                raise SessionLimitReached()
            self._per_namespace[namespace] = held + 1
        self._records[key] = new
        self._records.move_to_end(key)
        if self._next_expiry == math.inf:
            self._next_expiry = new.last_used_at + self._ttl_s

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        if not offload:
            # The common case: a microsecond compute, done under the lock in one go. No
            # compare-and-set needed when nothing else can run between read and write.
            with self._lock:
                now = self._clock()
                self._purge_expired(now)
                record = self._record(key)
                new, answer = compute(record)
                if new is not None:
                    self._store(key, record, new, now)
                return answer
        # A long compute runs in a thread, so other requests may change the record meanwhile.
        return await apply_optimistically(
            self, key, compute, offload=offload, attempts=self._attempts
        )

    async def apply_many(
        self, items: Sequence[tuple[str, Compute[T]]], *, offload: bool = False
    ) -> list[T | ServiceError]:
        if offload:
            return await self._apply_many_offloaded(items)
        results: list[T | ServiceError] = []
        with self._lock:  # everything in one go, as apply does for one key
            now = self._clock()
            self._purge_expired(now)
            for key, compute in items:
                record = self._record(key)
                try:
                    new, answer = compute(record)
                    if new is not None:
                        self._store(key, record, new, now)
                except ServiceError as error:
                    results.append(error)
                    continue
                results.append(answer)
        return results

    async def _apply_many_offloaded(
        self, items: Sequence[tuple[str, Compute[T]]]
    ) -> list[T | ServiceError]:
        """Read all, compute in a worker thread, write back each record nobody changed
        meanwhile; the others go through ``apply`` again."""
        with self._lock:
            self._purge_expired(self._clock())
            records = [self._record(key) for key, _ in items]
        computed = await anyio.to_thread.run_sync(
            compute_each, [compute for _, compute in items], records
        )
        results: list[T | ServiceError] = []
        again: list[int] = []
        with self._lock:
            now = self._clock()
            for index, ((key, _), record, outcome) in enumerate(
                zip(items, records, computed, strict=True)
            ):
                if isinstance(outcome, ServiceError):
                    results.append(outcome)
                    continue
                new, answer = outcome
                results.append(answer)
                if new is None:
                    continue
                if self._record(key) is not record:
                    again.append(index)
                    continue
                try:
                    self._store(key, record, new, now)
                except (SessionLimitReached, SessionQuotaReached) as error:
                    results[index] = error
        for index in again:
            key, compute = items[index]
            try:
                results[index] = await self.apply(key, compute)
            except ServiceError as error:
                results[index] = error
        return results

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
        compiled call, as session_rules.feed would. Left out, for the record path: sessions
        unknown (a new one counts against the cap and quota), under another model version or
        other settings, or sent a step that is not their own (a retry or a conflict).
        ``capacity``: the history window's (FORECAST_SESSION_HISTORY)."""
        if not self._compiling.ready():
            return Stepped.nothing()
        chosen: list[int] = []
        chosen_rows: list[int] = []
        fed: list[float] = []
        with self._lock:
            self._purge_expired(self._clock())
            records = self._records
            rows: SessionRows | None = None
            for index, key in enumerate(keys):
                entry = records.get(key)
                if entry is None:
                    continue
                if rows is None:  # not before: no arrays for a request of new sessions only
                    rows = self._rows.of(forecaster, policy, capacity, self._max_sessions)
                step = steps[index]
                if isinstance(entry, RowRef) and entry.rows is rows:
                    row = entry.row
                    if step is not None and step != rows.step_of(row):
                        continue
                else:
                    record = self._record(key)
                    assert record is not None
                    if step is not None and step != record.step:
                        continue
                    adopted = rows.adopt(record)
                    if adopted is None:
                        continue
                    row = adopted
                    records[key] = RowRef(rows, row)
                records.move_to_end(key)
                chosen.append(index)
                chosen_rows.append(row)
                fed.append(values[index])
            if rows is not None and chosen:
                return rows.step(chosen, chosen_rows, fed, now)
            if rows is not None and not rows.live:
                self._rows.drop(rows)
        return Stepped.nothing()

    def rows_in_use(self) -> int:
        """Sessions kept as rows now (the others are records)."""
        with self._lock:
            return self._rows.live()

    async def get(self, key: str) -> SessionRecord | None:
        return self._read(key)

    async def delete(self, key: str) -> bool:
        with self._lock:
            entry = self._records.pop(key, None)
            if entry is None:
                return False
            self._release(entry)
            self._left(key)
            return True

    async def count(self) -> int:
        with self._lock:
            self._purge_expired(self._clock())
            return len(self._records)

    async def list_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        # In key order, the cursor being the last key shown; the scan runs in a worker thread
        # and holds the lock only to copy the keys and to pick the records.
        return await anyio.to_thread.run_sync(self._list_page, prefix, cursor, limit)

    def _list_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        with self._lock:
            self._purge_expired(self._clock())
            keys = list(self._records)
        after = cursor if cursor is not None else ""
        chosen = heapq.nsmallest(
            limit + 1, (key for key in keys if key.startswith(prefix) and key > after)
        )
        with self._lock:
            page = [
                (key, record) for key in chosen[:limit] if (record := self._record(key)) is not None
            ]
        return page, (chosen[limit - 1] if len(chosen) > limit else None)

    async def namespace_counts(self) -> dict[str, int]:
        with self._lock:
            self._purge_expired(self._clock())
            return dict(self._per_namespace)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
