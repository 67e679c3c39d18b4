"""The SQLite writer thread's memory of the session rows it last wrote or read, decoded.

Decoding a record costs more than the rest of its step's read, and the row a step reads is
nearly always the row this thread wrote at the session's last step. A row is recognised by its
bytes, not by its revision or step: another process sharing the file, a rolled-back transaction
or a file replaced under the service all leave other bytes, and those are decoded again. So this
only saves work; the file stays the truth.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from app.session_rules import SessionRecord
from app.stores.record_codec import decode_stored_record
from app.window_ring import RingWindow

# Rows remembered at most, least recently used dropped first: a bound on the memory this takes
# (a row's bytes and its record, the window's ring shared between them), whatever the cap.
DECODED_ROWS_LIMIT = 20_000


class _Row(NamedTuple):
    data: bytes
    ring: bytes | None
    record: SessionRecord


def as_read_back(record: SessionRecord, ring: bytes | None) -> SessionRecord | None:
    """``record``, written with its window kept in ``ring``, as decoding the written row gives
    it back (its window as that ring); None when that is not certain without decoding (arrays
    not of float64, which the row stores as float64)."""
    if record.state.dtype != np.float64:
        return None
    if record.tracking is not None and record.tracking.dtype != np.float64:
        return None
    window = record.history
    if ring is None or window is None or window.shape[0] == 0:
        return record if window is None else record.with_history(None)
    rows, columns = window.shape
    return record.with_history(RingWindow(ring, rows, columns, record.step))


class DecodedRows:
    """Session rows by key, with their records: one thread's, not thread-safe."""

    def __init__(self, limit: int = DECODED_ROWS_LIMIT) -> None:
        self._rows: OrderedDict[str, _Row] = OrderedDict()
        self._limit = limit

    def record(self, key: str, data: bytes, ring: bytes | None) -> SessionRecord:
        """The record of the row read under ``key``, decoded unless it is the row remembered."""
        row = self._rows.get(key)
        if row is not None and row.data == data and row.ring == ring:
            self._rows.move_to_end(key)
            return row.record
        record = decode_stored_record(data, ring)
        self._keep(key, _Row(data, ring, record))
        return record

    def written(self, key: str, data: bytes, ring: bytes | None, record: SessionRecord) -> None:
        """``record`` was written under ``key`` as ``data`` with its window in ``ring``."""
        read_back = as_read_back(record, ring)
        if read_back is None:
            self._rows.pop(key, None)
        else:
            self._keep(key, _Row(data, ring, read_back))

    def _keep(self, key: str, row: _Row) -> None:
        rows = self._rows
        rows[key] = row
        rows.move_to_end(key)
        if len(rows) > self._limit:
            rows.popitem(last=False)
