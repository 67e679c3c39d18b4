"""A session's history window as a ring of fixed-size rows, kept beside its record (Redis, SQLite).

A step changes two rows of the window (the pending row gets its value, a new pending row is
added) and leaves the others as they were, so a store that keeps the window apart from the
record writes those rows only, instead of the whole window (a full default window is most of
a record's bytes).

Row layout, little-endian: the value and the forecast as float64, then the interval radii as
float32 (they are float32 values already: app.session_history). The row of step ``t`` sits in
slot ``t mod slots``; a window of ``R`` rows of a session at step ``s`` holds steps
``s + 2 - R .. s`` and, last, the pending row (step ``s + 1``). Slots outside the window hold
whatever they held: the record says how many rows are the window.

A store hands a window it read to the session rules as a :class:`RingWindow`, not decoded: a step
of one value writes its two rows into a copy of the ring's bytes (:meth:`RingWindow.pushed`), so
a normal step never turns the ring into an array and back. The array is built only where the
rows are read (a model change's replay, the history endpoint, a feed of several values).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from forecast_core.arrays import FloatArray

Piece = tuple[int, bytes]  # (byte offset in the ring, the bytes written there)
# Rows packed with struct rather than numpy (a step writes two).
_FEW_ROWS = 8
_VALUE = struct.Struct("<d")


@functools.cache  # one per column count; building a dtype costs more than a step's rows
def _row_type(columns: int) -> np.dtype[np.void]:
    fields: list[tuple[str, str, tuple[int, ...]]] = [("vf", "<f8", (2,))]
    if columns > 2:
        fields.append(("radii", "<f4", (columns - 2,)))
    return np.dtype(fields)


def row_size(columns: int) -> int:
    """Bytes per row of a window of ``columns`` (value, forecast and the radii)."""
    return _row_type(columns).itemsize


@functools.cache
def _row_struct(columns: int) -> struct.Struct:
    return struct.Struct(f"<2d{columns - 2}f" if columns > 2 else "<2d")


def _packed(rows: FloatArray) -> npt.NDArray[np.void]:
    """Rows of value, forecast and radii (along the last axis) in the ring's row layout."""
    columns = rows.shape[-1]
    packed = np.empty(rows.shape[:-1], dtype=_row_type(columns))
    packed["vf"] = rows[..., :2]
    if columns > 2:
        packed["radii"] = rows[..., 2:]
    return packed


def _rows_bytes(rows: FloatArray) -> bytes:
    count, columns = rows.shape
    if count <= _FEW_ROWS:  # a step's rows: struct is cheaper than a structured array here
        row = f"2d{columns - 2}f" if columns > 2 else "2d"
        return struct.pack(f"<{row * count}", *rows.ravel().tolist())
    return _packed(rows).tobytes()


def _first_step(rows: int, step: int) -> int:
    return step + 2 - rows


def ring_slots(history: int, rows: int) -> int:
    """Slots of the ring that holds a window of ``rows`` rows when the service keeps ``history``
    values: room to grow, doubling (a growing window is written whole a few times, not at every
    step), and never more than a full window's rows (a ring only as large as its window)."""
    full = history + 1
    if rows >= full:
        return rows
    return min(full, 1 << max(rows - 1, 0).bit_length())


def ring_bytes(history: FloatArray, step: int, slots: int) -> bytes:
    """The whole ring of ``slots`` slots (at least the window's rows) holding ``history``."""
    rows, columns = history.shape
    slots = max(slots, rows)
    ring = np.zeros(slots, dtype=_row_type(columns))
    ring[np.arange(_first_step(rows, step), step + 2) % slots] = _packed(history)
    return ring.tobytes()


def rings_bytes(windows: FloatArray) -> list[bytes]:
    """The rings of many sessions at once: ``windows`` holds each one's slots in slot order
    (sessions, slots, columns); one ring's bytes per session, as :func:`ring_bytes` lays out."""
    count, slots, columns = windows.shape
    data = _packed(windows).tobytes()
    size = slots * row_size(columns)
    return [data[start : start + size] for start in range(0, count * size, size)]


def _check_holds(ring: bytes, rows: int, columns: int) -> None:
    """ValueError unless ``ring`` is a whole number of rows of ``columns`` and holds ``rows``."""
    if columns < 2 or rows < 1:
        raise ValueError(f"a window of {rows} rows and {columns} columns")
    slots, rest = divmod(len(ring), row_size(columns))
    if rest or rows > slots:
        raise ValueError(
            f"a ring of {len(ring)} bytes cannot hold {rows} rows of {columns} columns"
        )


def ring_window(ring: bytes, rows: int, columns: int, step: int) -> FloatArray:
    """The window of ``rows`` rows of a session at ``step`` that ``ring`` holds; ValueError if
    the ring cannot hold it."""
    _check_holds(ring, rows, columns)
    kind = _row_type(columns)
    slots = len(ring) // kind.itemsize
    # The window's slots are one run of bytes, or two when it wraps around the ring's end:
    # byte slices and plain views, not an index array or a structured dtype (a read is on
    # every step's path).
    size = kind.itemsize
    start = (_first_step(rows, step) % slots) * size
    end = start + rows * size
    if end <= len(ring):
        run = np.frombuffer(ring, np.uint8, rows * size, start)
    else:
        run = np.frombuffer(ring[start:] + ring[: end - len(ring)], np.uint8)
    run = run.reshape(rows, size)
    window = np.empty((rows, columns))
    window[:, :2] = run[:, :16].view("<f8")
    if columns > 2:
        window[:, 2:] = run[:, 16:].view("<f4")
    return window


def changed_pieces(
    old: FloatArray | None, old_step: int, new: FloatArray | None, new_step: int, slots: int
) -> list[Piece] | None:
    """What to write into a ring of ``slots`` slots holding ``old`` (at ``old_step``) so that it
    holds ``new`` (at ``new_step``): the changed rows in one or two pieces (two when they wrap
    around the ring's end); None when only a whole new ring will do (no window before, other
    columns, more rows than slots, or rows before the changed ones that differ)."""
    if old is None or new is None or old.shape[0] == 0 or new.shape[0] == 0:
        return None
    old_rows, columns = old.shape
    new_rows = new.shape[0]
    changed = new_step - old_step + 1  # the old pending row, then one row per new value
    if columns != new.shape[1] or new_rows > slots or not 1 <= changed <= new_rows:
        return None
    kept = new_rows - changed
    if kept:
        start = _first_step(new_rows, new_step) - _first_step(old_rows, old_step)
        if start < 0 or start + kept > old_rows - 1:
            return None
        # Bit for bit (NaN included): any rewrite of an older row means a whole new ring.
        if new[:kept].tobytes() != old[start : start + kept].tobytes():
            return None
    data = _rows_bytes(new[kept:])
    size = row_size(columns)
    first = (old_step + 1) % slots
    if first + changed <= slots:
        return [(first * size, data)]
    split = (slots - first) * size
    return [(first * size, data[:split]), (0, data[split:])]


def updated_ring(
    ring: bytes | None,
    old: FloatArray | None,
    old_step: int,
    new: FloatArray,
    new_step: int,
    history: int,
) -> bytes:
    """The ring that holds ``new`` (at ``new_step``): ``ring``, which holds ``old`` (at
    ``old_step``), with the changed rows written over it when it can take them, so that it keeps
    its size and its other bytes; else a whole new ring, sized for a service that keeps
    ``history`` values."""
    if ring is not None:
        slots, rest = divmod(len(ring), row_size(new.shape[1]))
        pieces = None if rest else changed_pieces(old, old_step, new, new_step, slots)
        if pieces is not None:
            patched = bytearray(ring)
            for offset, data in pieces:
                patched[offset : offset + len(data)] = data
            return bytes(patched)
    return ring_bytes(new, new_step, ring_slots(history, new.shape[0]))


class RingWindow(NamedTuple):
    """A session's window as the ring a store keeps it in; rows decoded only when asked.

    A tuple of bytes and numbers, which the garbage collector stops tracking (and with it the
    record holding it), as it does for a window of rows: records kept in a cache must not add
    to every collection's work. ``base`` and ``pieces``: for a window pushed from another (the
    window a store read: :meth:`pushed_from`), that window's ring and the bytes that differ
    from it, so that a store can write those alone.
    """

    ring: bytes
    rows: int
    columns: int
    step: int  # the session's step: the pending row is step + 1's
    base: bytes | None = None
    pieces: tuple[Piece, ...] = ()

    @classmethod
    def read(cls, ring: bytes, rows: int, columns: int, step: int) -> RingWindow:
        """The window of ``rows`` rows of a session at ``step`` in a ring a store read;
        ValueError if the ring cannot hold it."""
        _check_holds(ring, rows, columns)
        return cls(ring, rows, columns, step)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.columns

    def array(self) -> FloatArray:
        """The window's rows, oldest first (app.session_history's layout)."""
        return ring_window(self.ring, self.rows, self.columns, self.step)

    def pushed_from(self, window: RingWindow | None) -> bool:
        """Whether this window is ``window`` pushed by a step (``pieces`` then name the bytes
        that differ from ``window``'s ring)."""
        return window is not None and self.base is not None and self.base is window.ring

    def settled(self) -> RingWindow:
        """This window without what it was pushed from: what a store keeps after writing it
        (else each kept window would keep its predecessor's ring too)."""
        return RingWindow(self.ring, self.rows, self.columns, self.step) if self.base else self

    def pushed(
        self, capacity: int, value: float, forecast: float, radii: Sequence[float]
    ) -> RingWindow | None:
        """The window after one more value (its pending row gets ``value``, a new pending row
        holds ``forecast`` and ``radii``) kept at most ``capacity`` values, as a copy of this
        ring with those two rows written; None when this ring cannot take it (it must grow
        first, or the columns differ): the caller then builds the window whole."""
        columns = self.columns
        ring = self.ring
        row_struct = _row_struct(columns)
        size = row_struct.size
        slots = len(ring) // size
        rows = self.rows + 1 if self.rows < capacity else capacity + 1
        if capacity < 1 or rows > slots or len(radii) != columns - 2:
            return None
        try:
            row = row_struct.pack(math.nan, forecast, *radii)
        except OverflowError:  # a radius beyond float32: numpy's rounding (inf) decides
            return None
        step = self.step
        value_at = (step + 1) % slots * size
        row_at = (step + 2) % slots * size
        packed_value = _VALUE.pack(value)
        patched = bytearray(ring)
        patched[value_at : value_at + 8] = packed_value
        patched[row_at : row_at + size] = row
        pieces = ((value_at, packed_value), (row_at, row))
        return RingWindow(bytes(patched), rows, columns, step + 1, ring, pieces)
