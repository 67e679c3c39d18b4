"""The SQLite writer thread's memory of the session records it last wrote or read, decoded.

Decoding a record costs more than the rest of its step's read, and the row a step reads is
nearly always the row this thread wrote at the session's last step. A record is recognised by
its bytes (which hold its revision), not by its key: another process sharing the file, a
rolled-back transaction or a file replaced under the service all leave other bytes, and those
are decoded again. The window's ring is not kept: the ring read is wrapped as decoding wraps
it, at the shape the record's bytes give. So this only saves work; the file stays the truth.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from app.recently_used import RecentlyUsed
from app.session_rules import SessionRecord
from app.stores.record_codec import (
    RecordFormatError,
    decode_record,
    decode_stored_record,
    ring_window_shape,
)
from app.window_ring import RingWindow

# Records remembered at most, least recently used dropped first (each about the size of its
# bytes, a few KB without the window): a bound on the memory this takes, whatever the cap.
DECODED_ROWS_LIMIT = 10_000


class _Remembered(NamedTuple):
    data: bytes
    record: SessionRecord  # without its window when that is kept in the ring
    ring_shape: tuple[int, int] | None  # the window's rows and columns in the ring


class DecodedRows:
    """Session records by key, with the bytes they were read from or written as; one thread's,
    not thread-safe."""

    def __init__(self, limit: int = DECODED_ROWS_LIMIT) -> None:
        self._remembered: RecentlyUsed[_Remembered] = RecentlyUsed(limit)

    def record(self, key: str, data: bytes, ring: bytes | None) -> SessionRecord:
        """The record of the row read under ``key``, as ``decode_stored_record`` gives it;
        decoded unless its bytes are the ones remembered."""
        remembered = self._remembered.get(key)
        if remembered is not None and remembered.data == data:
            record = _with_window(remembered, ring)
            if record is not None:
                self._remembered.use(key)
                return record
        try:
            record = decode_record(data, ring)
        except RecordFormatError:  # the session restarts, and says why: nothing to remember
            self._remembered.pop(key)
            return decode_stored_record(data, ring)
        shape = ring_window_shape(data)
        # A window inline in the bytes (an older format) is the record's own: kept with it.
        self._remembered.keep(
            key, _Remembered(data, record if shape is None else record.with_history(None), shape)
        )
        return record

    def written(self, key: str, data: bytes, record: SessionRecord) -> None:
        """``record`` was written under ``key`` as ``data`` (its window apart, in a ring)."""
        if record.state.dtype != np.float64 or (
            record.tracking is not None and record.tracking.dtype != np.float64
        ):
            # Decoding gives float64 arrays: only a decode gives back what it would read.
            self._remembered.pop(key)
            return
        # Written with its window apart: decoding reads the window from the ring alone.
        windowless = record if record.history is None else record.with_history(None)
        self._remembered.keep(key, _Remembered(data, windowless, ring_window_shape(data)))

    def forget(self, key: str) -> None:
        self._remembered.pop(key)


def _with_window(remembered: _Remembered, ring: bytes | None) -> SessionRecord | None:
    """The remembered record with the window of ``ring`` as decoding reads it; None when the
    ring cannot hold that window (a full decode then says so)."""
    if remembered.ring_shape is None or ring is None:
        return remembered.record  # no window, inline, or none read: decoding reads it so too
    rows, columns = remembered.ring_shape
    try:
        window = RingWindow.read(ring, rows, columns, remembered.record.step)
    except ValueError:
        return None
    return remembered.record.with_history(window)
