"""SQLite session store: one file, WAL, every applied step on disk before its response.

One writer thread owns the connection. Requests queue their changes; the thread applies all that
are waiting inside one ``BEGIN IMMEDIATE`` transaction and commits once (group commit), so one
fsync serves many requests. ``BEGIN IMMEDIATE`` also serializes writers in other processes that
share the file, which makes read-compute-write atomic across processes without compare-and-set.

A session's history window is kept beside its record as a ring of rows (app.window_ring),
in a column of the same row: a step rewrites the ring's two changed rows in a copy of the bytes
it read, so the row keeps its size and SQLite overwrites it in place, writing only the pages
whose bytes changed (the record's page and the ring's rows') instead of a whole new record.

Sessions that ``/predict/many`` (or a ``/stream`` batch) steps with one value each are also kept
in the writer thread as rows of arrays (app.stores.cached_rows), stepped by one compiled call
and written back by one statement (app.stores.row_codec), in the same transaction as ever: the
file is written as by the record path, without reading and decoding the rows again.

Expired sessions are deleted a bounded batch per transaction (oldest first, by the index on last
use), so the file stops growing at its peak of live sessions (SQLite reuses the freed pages) and
no single request pays for a mass expiry. The number of rows is kept in ``meta``, so the cap and
the live count never scan the table.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from app.auth import namespace_of
from app.errors import ServiceError, SessionLimitReached, SessionQuotaReached, StoreUnavailable
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_history import as_array
from app.session_rows import SessionRows, Stepped, StepRowsCompiling
from app.session_rules import SessionRecord
from app.stores.base import Compute, Quotas, T, no_quotas
from app.stores.cached_rows import CACHED_ROWS_LIMIT, CachedRows
from app.stores.record_codec import decode_stored_record, encode_record
from app.stores.row_codec import rows_records, rows_rings
from app.stores.sqlite_decoded import DECODED_ROWS_LIMIT, DecodedRows
from app.window_ring import RingWindow, updated_ring

logger = logging.getLogger(__name__)

# A session's row, in a rowid table: its leaf page holds a record of 2 KB whole (a WITHOUT ROWID
# leaf holds about 1 KB), so that a step writes no overflow page for it.
_SESSION_COLUMNS = """(
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    record BLOB NOT NULL,
    last_used_at REAL NOT NULL,
    ring BLOB
)"""
_LAST_USE_INDEX = "CREATE INDEX IF NOT EXISTS sessions_by_last_use ON sessions (last_used_at)"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS sessions {_SESSION_COLUMNS};
{_LAST_USE_INDEX};
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
INSERT OR IGNORE INTO meta (name, value) SELECT 'rows', COUNT(*) FROM sessions;
CREATE TABLE IF NOT EXISTS namespaces (name TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('namespaces_counted', 0);
"""
# A file written before per-key quotas has rows but no counts per namespace: count them once.
# substr/instr is app.auth.namespace_of in SQL: what comes before the key's first '/'.
_COUNT_NAMESPACES = """
DELETE FROM namespaces;
INSERT INTO namespaces (name, rows)
    SELECT substr(key, 1, instr(key, '/') - 1), COUNT(*) FROM sessions GROUP BY 1;
UPDATE meta SET value = 1 WHERE name = 'namespaces_counted';
"""
# A file written before the window moved out of the record has no ring column: add it once.
_ADD_RING = "ALTER TABLE sessions ADD COLUMN ring BLOB"
# A file written before keeps its sessions in a WITHOUT ROWID table, where a record of 2 KB
# spills into an overflow page, one more page written (and, among a million sessions, read) by
# every step: rebuilt once, in one transaction, its sessions kept.
_ADD_ROWID = f"""
CREATE TABLE sessions_with_rowid {_SESSION_COLUMNS};
INSERT INTO sessions_with_rowid (key, record, last_used_at, ring)
    SELECT key, record, last_used_at, ring FROM sessions ORDER BY key;
DROP TABLE sessions;
ALTER TABLE sessions_with_rowid RENAME TO sessions;
{_LAST_USE_INDEX}
"""
# Changes applied in one transaction at most; bounds the latency one commit adds.
_MAX_GROUP = 256
# Expired sessions deleted per transaction at most: cleanup keeps pace with any rate of new
# sessions below this many per commit, and one commit never deletes a mass expiry at once.
_PURGE_BATCH = 256
# Keys read by one statement of apply_many (each key is a bound parameter; SQLite allows 32,766).
_KEYS_PER_READ = 500
# An existing session's step: an UPDATE, not a REPLACE, so that a row of the same size is
# overwritten in place. Its parameters: record, last use, ring, key.
_UPDATE = "UPDATE sessions SET record = ?, last_used_at = ?, ring = ? WHERE key = ?"
# The same by row id, for sessions stepped in place (their row ids known).
_UPDATE_BY_ID = "UPDATE sessions SET record = ?, last_used_at = ?, ring = ? WHERE id = ?"
_Row = tuple[bytes, float, bytes | None, str]


class _Stored(NamedTuple):
    """A session's row as read, undecoded."""

    rowid: int
    record: bytes
    ring: bytes | None


class _InPlaceRowLost(sqlite3.DatabaseError):
    """A session stepped in place had no row to write to: the transaction must not commit."""


def prefix_end(prefix: str) -> str:
    """The least string above every string that starts with ``prefix`` (non-empty)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass
class _Job:
    """One request's work for the writer thread, with the future that carries its answer."""

    run: Callable[[sqlite3.Connection, float], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    error: BaseException | None = field(default=None)
    result: Any = None


class SqliteStore:
    """Durable, multi-process-safe session store in a single SQLite file."""

    name = "sqlite"
    # Computes run in the writer thread, never on the event loop.
    computes_off_event_loop = True

    def __init__(
        self,
        path: Path,
        *,
        ttl_s: float,
        max_sessions: int,
        clock: Callable[[], float] = time.time,
        quotas: Quotas = no_quotas,
        history: int = 0,
    ) -> None:
        self.path = path
        self._history = history
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_sessions = max_sessions
        self._quotas = quotas
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None
        # The revision counter of the writer's transaction in progress (None: not read yet).
        self._revision: int | None = None
        # The writer thread's: the records it last wrote or read, by their bytes.
        self._decoded = DecodedRows(min(max_sessions, DECODED_ROWS_LIMIT))
        # The writer thread's: sessions stepped in place, as rows (see feed_in_place).
        # No more rows than sessions may live: the rows' arrays, allocated for that many, never
        # grow for rows of sessions that expired meanwhile.
        self._cached = CachedRows(min(max_sessions, CACHED_ROWS_LIMIT))
        self._compiling = StepRowsCompiling()
        self._thread = threading.Thread(target=self._serve, name="sqlite-store", daemon=True)
        self._thread.start()

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        ttl_s: float,
        max_sessions: int,
        clock: Callable[[], float] = time.time,
        quotas: Quotas = no_quotas,
        history: int = 0,
    ) -> SqliteStore:
        """Start the store; a file that cannot be opened yet makes it unavailable, not fatal.
        ``history``: the values a session's window keeps (sizes the ring it is kept in)."""
        store = cls(
            path,
            ttl_s=ttl_s,
            max_sessions=max_sessions,
            clock=clock,
            quotas=quotas,
            history=history,
        )
        try:
            await store.ping()
        except StoreUnavailable as error:
            logger.error("session store not available yet: %s", error.message)
        return store

    # -- the writer thread -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                # FULL: the WAL is fsynced at every commit, so an acknowledged step survives a
                # power cut, not only a process crash.
                connection.execute("PRAGMA synchronous=FULL")
                # Checkpoint every 10,000 WAL pages (about 40 MB) instead of SQLite's 1,000: a
                # session's record spans several pages (its history window), and a longer WAL
                # lets a checkpoint write each page once for many updates of it.
                connection.execute("PRAGMA wal_autocheckpoint=10000")
                connection.executescript(_SCHEMA)
                _add_ring_once(connection)
                _add_rowid_once(connection)
                _count_namespaces_once(connection)
            except sqlite3.Error:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            group = [job]
            while len(group) < _MAX_GROUP:
                try:
                    extra = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    self._jobs.put(None)  # finish this group, then stop
                    break
                group.append(extra)
            self._run_group(group)
        if self._connection is not None:
            self._connection.close()

    def _run_group(self, group: list[_Job]) -> None:
        now = self._clock()
        try:
            connection = self._connect()
            self._revision = None  # read again inside this transaction
            with _immediate_transaction(connection):
                for job in group:
                    try:
                        job.result = job.run(connection, now)
                    except sqlite3.Error:
                        raise
                    except Exception as error:  # a refusal (conflict, cap): nothing written
                        job.error = error
                self._purge_expired(connection, now)
                self._save_revision(connection)
        except (sqlite3.Error, OSError) as error:  # OSError: the folder cannot be made
            self._cached.clear()  # rows stepped in this transaction: not in the file
            self._drop_connection()
            failure = StoreUnavailable(
                f"SQLite session file {self.path}",
                str(error),
                "check that the folder exists, is writable and has space",
            )
            for job in group:
                job.error = failure
        for job in group:
            job.loop.call_soon_threadsafe(_settle, job)

    def _drop_connection(self) -> None:
        self._cached.clear()
        if self._connection is not None:
            try:
                self._connection.close()
            except sqlite3.Error:
                pass
            self._connection = None

    async def _submit(self, run: Callable[[sqlite3.Connection, float], Any]) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(run=run, loop=loop, future=loop.create_future())
        self._jobs.put(job)
        return await job.future

    # -- operations, run inside the writer's transaction --------------------------------------

    def _read_row(
        self, connection: sqlite3.Connection, key: str, now: float
    ) -> tuple[SessionRecord, bytes | None] | None:
        """The live session under ``key`` and the ring its window is kept in, or None."""
        row = self._read_rows(connection, [key], now).get(key)
        if row is None:
            return None
        return self._decoded.record(key, row.record, row.ring), row.ring

    def _read_rows(
        self, connection: sqlite3.Connection, keys: list[str], now: float
    ) -> dict[str, _Stored]:
        """The live sessions among ``keys``, undecoded: one statement for a chunk of keys
        instead of one each."""
        found: dict[str, _Stored] = {}
        for start in range(0, len(keys), _KEYS_PER_READ):
            chunk = keys[start : start + _KEYS_PER_READ]
            marks = ",".join("?" * len(chunk))
            rows = connection.execute(
                f"SELECT key, id, record, ring FROM sessions WHERE key IN ({marks})"
                " AND last_used_at > ?",
                (*chunk, now - self._ttl_s),
            )
            for key, rowid, data, ring in rows:
                found[key] = _Stored(rowid, data, ring)
        return found

    def _read(self, connection: sqlite3.Connection, key: str, now: float) -> SessionRecord | None:
        found = self._read_row(connection, key, now)
        return found[0] if found is not None else None

    def _ring_of(
        self, new: SessionRecord, old: SessionRecord | None, old_ring: bytes | None
    ) -> bytes | None:
        """The ring to store for ``new``'s window: the old ring with only its changed rows
        rewritten when it can take them (the row then keeps its size), None for no window."""
        window = new.history
        if isinstance(window, RingWindow):
            return window.ring  # the ring read, with the step's rows written in its bytes
        if window is None or window.shape[0] == 0:
            return None
        if old is None:
            return updated_ring(None, None, 0, window, new.step, self._history)
        return updated_ring(
            old_ring, as_array(old.history), old.step, window, new.step, self._history
        )

    def _next_revision(self, connection: sqlite3.Connection) -> int:
        """A revision above every one written: the group's counter, read from the file at its
        first use in the transaction and written back once at its end (no other process writes
        meanwhile: the transaction is IMMEDIATE)."""
        if self._revision is None:
            (value,) = connection.execute(
                "SELECT value FROM meta WHERE name = 'revision'"
            ).fetchone()
            self._revision = int(value)
        self._revision += 1
        return self._revision

    def _next_revisions(self, connection: sqlite3.Connection, count: int) -> int:
        """The first of ``count`` consecutive revisions above every one written."""
        first = self._next_revision(connection)
        self._revision = first + count - 1
        return first

    def _save_revision(self, connection: sqlite3.Connection) -> None:
        if self._revision is not None:
            connection.execute(
                "UPDATE meta SET value = ? WHERE name = 'revision'", (self._revision,)
            )

    def _purge_expired(self, connection: sqlite3.Connection, now: float) -> int:
        """Delete up to one batch of expired sessions, oldest first; how many were deleted."""
        keys = connection.execute(
            # By row id: the last-use index holds it, so the search reads no table row.
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE last_used_at <= ?"
            " ORDER BY last_used_at LIMIT ?) RETURNING key",
            (now - self._ttl_s, _PURGE_BATCH),
        ).fetchall()
        self._removed(connection, [key for (key,) in keys])
        return len(keys)

    def _removed(self, connection: sqlite3.Connection, keys: list[str]) -> None:
        """Take deleted rows out of the counts (the service's and their namespaces')."""
        if not keys:
            return
        for key in keys:
            self._decoded.forget(key)
            self._cached.forget(key)
        self._add_rows(connection, -len(keys))
        per_namespace: dict[str, int] = {}
        for key in keys:
            namespace = namespace_of(key)
            per_namespace[namespace] = per_namespace.get(namespace, 0) + 1
        for namespace, count in per_namespace.items():
            self._add_to_namespace(connection, namespace, -count)

    def _add_rows(self, connection: sqlite3.Connection, change: int) -> None:
        if change:
            connection.execute("UPDATE meta SET value = value + ? WHERE name = 'rows'", (change,))

    def _add_to_namespace(
        self, connection: sqlite3.Connection, namespace: str, change: int
    ) -> None:
        connection.execute(
            "INSERT INTO namespaces (name, rows) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET rows = rows + excluded.rows",
            (namespace, change),
        )
        if change < 0:  # a namespace without sessions leaves no row behind
            connection.execute("DELETE FROM namespaces WHERE name = ? AND rows <= 0", (namespace,))

    def _namespace_rows(self, connection: sqlite3.Connection, namespace: str) -> int:
        row = connection.execute("SELECT rows FROM namespaces WHERE name = ?", (namespace,))
        found = row.fetchone()
        return int(found[0]) if found is not None else 0

    def _ensure_quota(self, connection: sqlite3.Connection, key: str, now: float) -> None:
        namespace = namespace_of(key)
        quota = self._quotas(namespace)
        if quota is None or self._namespace_rows(connection, namespace) < quota:
            return
        # Expired rows still count: at the quota, clear this namespace's (its keys are one
        # range of the primary key, so this reads only its own rows).
        expired = connection.execute(
            "DELETE FROM sessions WHERE key > ? AND key < ? AND last_used_at <= ? RETURNING key",
            (f"{namespace}/", f"{namespace}0", now - self._ttl_s),
        ).fetchall()
        self._removed(connection, [key for (key,) in expired])
        if self._namespace_rows(connection, namespace) >= quota:
            raise SessionQuotaReached(quota)

    def _rows(self, connection: sqlite3.Connection) -> int:
        (rows,) = connection.execute("SELECT value FROM meta WHERE name = 'rows'").fetchone()
        return int(rows)

    def _ensure_room(self, connection: sqlite3.Connection, now: float) -> None:
        # Expired rows still count in 'rows': at the cap, clear them before refusing anyone.
        while self._rows(connection) >= self._max_sessions:
            if not self._purge_expired(connection, now):
                raise SessionLimitReached()

    def _apply_in(
        self, connection: sqlite3.Connection, now: float, key: str, compute: Compute[T]
    ) -> T:
        found = self._read_row(connection, key, now)
        record, ring = found if found is not None else (None, None)
        new, answer = compute(record)
        if new is not None:
            update = self._write(connection, now, key, record, ring, new)
            if update is not None:
                connection.execute(_UPDATE, update)
        return answer

    def _apply_all_in(
        self, connection: sqlite3.Connection, now: float, items: Sequence[tuple[str, Compute[T]]]
    ) -> list[T | ServiceError]:
        """``_apply_in`` for distinct keys: their rows read together, the updates of existing
        sessions written together at the end (new sessions are inserted in turn, each counted
        against the caps as it comes)."""
        keys = [key for key, _ in items]
        if len(set(keys)) != len(keys):  # a second step would be computed from a stale read
            raise ValueError("apply_many takes distinct keys")
        found = self._read_rows(connection, keys, now)
        updates: list[_Row] = []
        results: list[T | ServiceError] = []
        for key, compute in items:
            stored = found.get(key)
            ring = stored.ring if stored is not None else None
            record = self._decoded.record(key, stored.record, ring) if stored is not None else None
            try:
                new, answer = compute(record)
                if new is not None:
                    update = self._write(connection, now, key, record, ring, new)
                    if update is not None:
                        updates.append(update)
            except ServiceError as error:  # this item refused, nothing written; the others go on
                results.append(error)
                continue
            results.append(answer)
        if updates:
            connection.executemany(_UPDATE, updates)
        return results

    def _write(
        self,
        connection: sqlite3.Connection,
        now: float,
        key: str,
        record: SessionRecord | None,
        ring: bytes | None,
        new: SessionRecord,
    ) -> _Row | None:
        """Write ``new`` over ``record`` (read with ``ring``): a new session is counted against
        the caps (a refusal raised) and inserted; for an existing one, the UPDATE's parameters,
        for the caller to run."""
        if record is None:
            # An expired row under this key is replaced: it leaves the counts first.
            if self._delete_row(connection, key):
                self._removed(connection, [key])
            self._ensure_quota(connection, key, now)
            self._ensure_room(connection, now)
            self._add_rows(connection, 1)
            self._add_to_namespace(connection, namespace_of(key), 1)
        stored = new.with_revision(self._next_revision(connection))
        data = encode_record(stored, window_apart=True)
        new_ring = self._ring_of(stored, record, ring)
        self._decoded.written(key, data, stored)
        self._cached.forget(key)
        row = (data, stored.last_used_at, new_ring, key)
        if record is not None:
            return row
        connection.execute(
            "INSERT OR REPLACE INTO sessions (record, last_used_at, ring, key) VALUES (?, ?, ?, ?)",
            row,
        )
        return None

    async def apply(self, key: str, compute: Compute[T], *, offload: bool = False) -> T:
        result: T = await self._submit(
            lambda connection, now: self._apply_in(connection, now, key, compute)
        )
        return result

    async def apply_many(
        self, items: Sequence[tuple[str, Compute[T]]], *, offload: bool = False
    ) -> list[T | ServiceError]:
        """One job for the writer thread: every item in the same transaction, one commit."""

        results: list[T | ServiceError] = await self._submit(
            lambda connection, now: self._apply_all_in(connection, now, items)
        )
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
        compiled call and one UPDATE statement, as session_rules.feed and ``apply`` would, in
        one transaction. Left out, for the record path: sessions not in the file (a new one
        counts against the cap and quota), under another model version or other settings, or
        sent a step that is not their own (a retry or a conflict). ``capacity``: the history
        window's (FORECAST_SESSION_HISTORY), the store's own."""
        if capacity != self._history or not self._compiling.ready():
            return Stepped.nothing()
        stepped: Stepped = await self._submit(
            lambda connection, store_now: self._feed_in_place_in(
                connection, store_now, keys, values, steps, forecaster, policy, now
            )
        )
        return stepped

    def _feed_in_place_in(
        self,
        connection: sqlite3.Connection,
        store_now: float,
        keys: Sequence[str],
        values: Sequence[float],
        steps: Sequence[int | None],
        forecaster: Forecaster,
        policy: IntervalPolicy,
        now: float,
    ) -> Stepped:
        cached = self._cached
        try:
            (data_version,) = connection.execute("PRAGMA data_version").fetchone()
            cached.check(data_version)
            rows = cached.rows_of(forecaster, policy, self._history, self._max_sessions)
            chosen = self._rows_to_step(connection, store_now, keys, steps, rows)
            if not chosen:
                return Stepped.nothing()
            indexes = [index for index, _, _ in chosen]
            stepped = rows.step(
                indexes, [row for _, row, _ in chosen], [values[index] for index in indexes], now
            )
            self._write_rows(connection, rows, chosen)
            return stepped
        except BaseException:  # stepped rows may not be written: none trusted any more
            cached.clear()
            raise

    def _rows_to_step(
        self,
        connection: sqlite3.Connection,
        now: float,
        keys: Sequence[str],
        steps: Sequence[int | None],
        rows: SessionRows,
    ) -> list[tuple[int, int, int]]:
        """The sessions among ``keys`` to step in place, as (position in ``keys``, row, row
        id), in ``keys``' order; sessions not yet rows read from the file and adopted."""
        cached = self._cached
        chosen: list[tuple[int, int, int]] = []
        unknown: list[int] = []
        for index, key in enumerate(keys):
            entry = cached.get(key)
            if entry is None:
                unknown.append(index)
                continue
            if cached.outlived(key, entry, rows, now - self._ttl_s):
                continue
            step = steps[index]
            if step is None or step == rows.step_of(entry.row):
                chosen.append((index, entry.row, entry.rowid))
        if not unknown:
            return chosen
        found = self._read_rows(connection, [keys[index] for index in unknown], now)
        stepping = set(keys)
        for index in unknown:
            key = keys[index]
            stored = found.get(key)
            if stored is None:  # a new session: the record path counts it against the caps
                continue
            record = self._decoded.record(key, stored.record, stored.ring)
            self._decoded.forget(key)  # its bytes change with this step
            step = steps[index]
            if step is not None and step != record.step:
                continue
            row = cached.adopt(key, stored.rowid, record, rows, stepping)
            if row is not None:
                chosen.append((index, row, stored.rowid))
        chosen.sort()
        return chosen

    def _write_rows(
        self, connection: sqlite3.Connection, rows: SessionRows, chosen: list[tuple[int, int, int]]
    ) -> None:
        """Write the stepped rows back to the file, each under a new revision."""
        which = np.array([row for _, row, _ in chosen], dtype=np.int64)
        first = self._next_revisions(connection, len(chosen))
        revisions = np.arange(first, first + len(chosen), dtype=np.int64)
        rows.columns.revisions[which] = revisions
        written = connection.executemany(
            _UPDATE_BY_ID,
            zip(
                rows_records(rows, which, revisions),
                rows.columns.used[which].tolist(),
                rows_rings(rows, which),
                [rowid for _, _, rowid in chosen],
                strict=True,
            ),
        ).rowcount
        if written != len(chosen):
            raise _InPlaceRowLost(f"{len(chosen) - written} sessions stepped in place had no row")

    def rows_in_use(self) -> int:
        """Sessions kept as rows now (stepped in place while nothing else changed them)."""
        return len(self._cached)

    async def get(self, key: str) -> SessionRecord | None:
        record: SessionRecord | None = await self._submit(
            lambda connection, now: self._read(connection, key, now)
        )
        return record

    def _delete_row(self, connection: sqlite3.Connection, key: str) -> int:
        return connection.execute("DELETE FROM sessions WHERE key = ?", (key,)).rowcount

    async def delete(self, key: str) -> bool:
        def run(connection: sqlite3.Connection, _now: float) -> bool:
            deleted = self._delete_row(connection, key)
            if deleted:
                self._removed(connection, [key])
            return deleted > 0

        deleted: bool = await self._submit(run)
        return deleted

    async def count(self) -> int:
        def run(connection: sqlite3.Connection, now: float) -> int:
            # Expired rows are few (deleted a batch per commit): count those, not the live ones.
            (expired,) = connection.execute(
                "SELECT COUNT(*) FROM sessions WHERE last_used_at <= ?", (now - self._ttl_s,)
            ).fetchone()
            return self._rows(connection) - int(expired)

        live: int = await self._submit(run)
        return live

    async def list_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        # In key order along the primary key, the cursor being the last key shown.
        after = cursor if cursor is not None and cursor >= prefix else prefix

        def run(connection: sqlite3.Connection, now: float) -> list[tuple[str, bytes]]:
            rows: list[tuple[str, bytes]] = connection.execute(
                "SELECT key, record FROM sessions WHERE key > ? AND key < ?"
                " AND last_used_at > ? ORDER BY key LIMIT ?",
                (after, prefix_end(prefix), now - self._ttl_s, limit + 1),
            ).fetchall()
            return rows

        rows = await self._submit(run)
        page = [(key, decode_stored_record(data)) for key, data in rows[:limit]]
        return page, (rows[limit - 1][0] if len(rows) > limit else None)

    async def namespace_counts(self) -> dict[str, int]:
        def run(connection: sqlite3.Connection, now: float) -> dict[str, int]:
            counts = dict(connection.execute("SELECT name, rows FROM namespaces WHERE rows > 0"))
            expired = connection.execute(
                "SELECT substr(key, 1, instr(key, '/') - 1), COUNT(*) FROM sessions"
                " WHERE last_used_at <= ? GROUP BY 1",
                (now - self._ttl_s,),
            )
            for namespace, count in expired:
                counts[namespace] = counts.get(namespace, 0) - count
            return {name: int(rows) for name, rows in counts.items() if rows > 0}

        counts: dict[str, int] = await self._submit(run)
        return counts

    async def ping(self) -> None:
        # A real write: a file that became read-only must show up here, not at the next step.
        await self._submit(lambda connection, _now: self._next_revision(connection))

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, 10.0)


@contextmanager
def _immediate_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction, taken before it reads (``BEGIN IMMEDIATE``: no other process writes
    the file meanwhile), committed at the end or rolled back on any error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _session_columns(connection: sqlite3.Connection) -> set[str]:
    return {row[1] for row in connection.execute("PRAGMA table_info(sessions)")}


def _add_ring_once(connection: sqlite3.Connection) -> None:
    with _immediate_transaction(connection):  # another process may be doing the same
        if "ring" not in _session_columns(connection):
            connection.execute(_ADD_RING)


def _add_rowid_once(connection: sqlite3.Connection) -> None:
    with _immediate_transaction(connection):  # another process may be doing the same
        rebuilt = "id" not in _session_columns(connection)
        if rebuilt:
            for statement in filter(str.strip, _ADD_ROWID.split(";")):
                connection.execute(statement)
    if rebuilt:
        # The rebuild went through the write-ahead log, about the file's size again: move it
        # into the file now and give the log's space back.
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _count_namespaces_once(connection: sqlite3.Connection) -> None:
    with _immediate_transaction(connection):  # another process may be doing the same
        (counted,) = connection.execute(
            "SELECT value FROM meta WHERE name = 'namespaces_counted'"
        ).fetchone()
        if not counted:
            for statement in filter(str.strip, _COUNT_NAMESPACES.split(";")):
                connection.execute(statement)


def _settle(job: _Job) -> None:
    if job.future.cancelled():
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)
