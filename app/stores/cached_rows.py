"""A durable or shared store's sessions kept as rows (app.session_rows), to step many in place.

A write-through cache: a step in place writes every stepped session back to the store in the
same request (app.stores.row_codec), so the store stays the truth and a row here only saves
reading, decoding and computing its session one record at a time.

- SQLite (its writer thread): a row is trusted while no other connection committed to the file
  since the last in-place step read its ``PRAGMA data_version`` (:meth:`CachedRows.check`: every
  row is dropped), this store wrote or deleted nothing under its key by another path (the store
  forgets it), and every transaction since committed (a rolled-back one drops every row).
- Redis (this replica's event loop): a row is this replica's last view of its session, as the
  record cache is for the record path; each write is a compare-and-set on the row's revision,
  so a session another replica changed fails it and takes the record path (the row is dropped).

Rows are kept for the most recently stepped sessions only, least recently used dropped first:
a bound on memory whatever the number of sessions in the store.
"""

from __future__ import annotations

from collections.abc import Container
from typing import NamedTuple

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.recently_used import RecentlyUsed
from app.session_rows import RowsByModel, SessionRows
from app.session_rules import SessionRecord

# Sessions kept as rows at most (a row of the default model and window is about 10 KB).
CACHED_ROWS_LIMIT = 4096


class CachedRow(NamedTuple):
    rows: SessionRows
    row: int
    rowid: int  # SQLite: the session's row id in the file, which the step's UPDATE names


class CachedRows:
    """Sessions as rows, by key; not thread-safe (one thread or event loop uses them)."""

    def __init__(self, limit: int) -> None:
        self._entries: RecentlyUsed[CachedRow] = RecentlyUsed(limit)
        self._rows = RowsByModel()
        self._limit = limit
        self._data_version: int | None = None

    def check(self, data_version: int) -> None:
        """Drop every row unless ``data_version`` (the file's, read in this transaction) is
        the one read last: another connection committed in between."""
        if data_version != self._data_version:
            self.clear()
            self._data_version = data_version

    def clear(self) -> None:
        self._entries.clear()
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def rows_of(
        self, forecaster: Forecaster, policy: IntervalPolicy, capacity: int, most: int
    ) -> SessionRows:
        """The rows of this model, interval policy and window capacity (``most``: the sessions
        they may hold)."""
        return self._rows.of(forecaster, policy, capacity, min(most, self._limit))

    def get(self, key: str) -> CachedRow | None:
        """The session's row, now the most recently used, or None."""
        return self._entries.use(key)

    def outlived(self, key: str, entry: CachedRow, rows: SessionRows, oldest: float) -> bool:
        """Whether ``entry``, the row of ``key``, can no longer be stepped as one of ``rows``:
        it is of another model (the record path replays its window) or its session was last
        used at ``oldest`` or before (expired: the record path makes it anew). Such a row is
        forgotten."""
        if entry.rows is rows and entry.rows.last_used(entry.row) > oldest:
            return False
        self.forget(key)
        return True

    def peek(self, key: str) -> CachedRow | None:
        """The session's row, or None, its place in the order unchanged."""
        return self._entries.get(key)

    def adopt(
        self,
        key: str,
        rowid: int,
        record: SessionRecord,
        rows: SessionRows,
        stepping: Container[str],
    ) -> int | None:
        """A row of ``rows`` holding ``record`` (read under ``key``; from row ``rowid`` of an
        SQLite file, 0 for Redis), or None when the rows cannot take it (SessionRows.adopt) or
        are full of sessions of ``stepping`` (those being stepped)."""
        self.forget(key)
        entries = self._entries
        if entries.full:
            oldest = entries.oldest()
            if oldest in stepping:
                return None
            if oldest is not None:
                self._release_entry(oldest)
        row = rows.adopt(record)
        if row is not None:
            dropped = entries.keep(key, CachedRow(rows, row, rowid))
            if dropped is not None:  # none while the limit is above zero: room was made
                self._release(dropped)
            # Kept again if a row let go of in this request emptied them (and so dropped them).
            self._rows.keep(rows)
        return row

    def forget(self, key: str) -> None:
        """The session changed in the file by another path, or left it."""
        self._release_entry(key)

    def _release_entry(self, key: str) -> None:
        entry = self._entries.pop(key)
        if entry is not None:
            self._release(entry)

    def _release(self, entry: CachedRow) -> None:
        self._rows.release(entry.rows, entry.row)
