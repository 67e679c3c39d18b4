"""A session's history window as a ring of fixed-size rows, kept beside its record (Redis).

A step changes two rows of the window (the pending row gets its value, a new pending row is
added) and leaves the others as they were, so a store that keeps the window apart from the
record writes those rows only, instead of the whole window (a full default window is most of
a record's bytes).

Row layout, little-endian: the value and the forecast as float64, then the interval radii as
float32 (they are float32 values already: app.session_history). The row of step ``t`` sits in
slot ``t mod slots``; a window of ``R`` rows of a session at step ``s`` holds steps
``s + 2 - R .. s`` and, last, the pending row (step ``s + 1``). Slots outside the window hold
whatever they held: the record says how many rows are the window.
"""

from __future__ import annotations

import numpy as np

from forecast_core.arrays import FloatArray

Piece = tuple[int, bytes]  # (byte offset in the ring, the bytes written there)


def _row_type(columns: int) -> np.dtype[np.void]:
    fields: list[tuple[str, str, tuple[int, ...]]] = [("vf", "<f8", (2,))]
    if columns > 2:
        fields.append(("radii", "<f4", (columns - 2,)))
    return np.dtype(fields)


def row_size(columns: int) -> int:
    """Bytes per row of a window of ``columns`` (value, forecast and the radii)."""
    return _row_type(columns).itemsize


def _rows_bytes(rows: FloatArray) -> bytes:
    packed = np.empty(rows.shape[0], dtype=_row_type(rows.shape[1]))
    packed["vf"] = rows[:, :2]
    if rows.shape[1] > 2:
        packed["radii"] = rows[:, 2:]
    return packed.tobytes()


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
    positions = np.arange(_first_step(rows, step), step + 2) % slots
    ring["vf"][positions] = history[:, :2]
    if columns > 2:
        ring["radii"][positions] = history[:, 2:]
    return ring.tobytes()


def ring_window(ring: bytes, rows: int, columns: int, step: int) -> FloatArray:
    """The window of ``rows`` rows of a session at ``step`` that ``ring`` holds; ValueError if
    the ring cannot hold it."""
    kind = _row_type(columns)
    slots, rest = divmod(len(ring), kind.itemsize)
    if rest or rows > slots or rows < 1 or columns < 2:
        raise ValueError(
            f"a ring of {len(ring)} bytes cannot hold {rows} rows of {columns} columns"
        )
    stored = np.frombuffer(ring, dtype=kind)
    positions = np.arange(_first_step(rows, step), step + 2) % slots
    window = np.empty((rows, columns))
    window[:, :2] = stored["vf"][positions]
    if columns > 2:
        window[:, 2:] = stored["radii"][positions]
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
