"""Many session rows written at once in a durable store's form: their format 5 records and rings.

The SQLite and Redis stores step sessions they keep as rows (app.session_rows) and write them
back at once (one statement; one pipeline): each row's record as the bytes
``encode_record(record, window_apart=True)`` gives its record, and its window as a ring that
``RingWindow.read`` reads back as that window, with every row of the window in the slot of its
step (app.window_ring), so that a ring written over the one a step started from differs from it
in the step's two rows only (which Redis writes alone: :func:`rows_step_pieces`). Built as numpy
arrays for all the rows together: the per-record encoders cost more than the rest of such a step.
"""

from __future__ import annotations

import numpy as np

from app.session_rows import IntArray, SessionRows
from app.stores.record_codec import FORMAT_WINDOW_APART, one_value_records_type
from app.window_ring import ring_slots, rings_bytes, row_size


def rows_records(rows: SessionRows, chosen: IntArray, revisions: IntArray) -> list[bytes]:
    """The record of each row in ``chosen`` (stepped, so one last value each), written with
    the revision at the same place in ``revisions``."""
    columns = rows.columns
    version = rows.forecaster.version.encode()
    state_size = columns.states.shape[1]
    tracking_size = columns.tracking.shape[1]
    levels = columns.last_offsets.shape[1]
    kind = one_value_records_type(len(version), state_size, tracking_size, levels)
    records = np.empty(len(chosen), kind)
    records["format"] = FORMAT_WINDOW_APART
    records["step"] = columns.steps[chosen]
    records["revision"] = revisions
    records["created"] = columns.created[chosen]
    records["used"] = columns.used[chosen]
    records["version_size"] = len(version)
    records["state_size"] = state_size
    records["values"] = 1
    records["tracking_size"] = tracking_size
    records["per_value"] = levels
    if rows.capacity > 0:
        records["rows"] = columns.counts[chosen]
        records["columns"] = columns.windows.shape[2]
    else:
        records["rows"] = records["columns"] = 0
    records["version"] = version
    records["state"] = columns.states[chosen]
    records["value"] = columns.last_values[chosen]
    records["prediction"] = columns.last_predictions[chosen]
    records["tracking"] = columns.tracking[chosen]
    records["offsets"] = columns.last_offsets[chosen]
    records["missed"] = columns.last_misses[chosen]
    data = records.tobytes()
    size = kind.itemsize
    return [data[start : start + size] for start in range(0, len(data), size)]


def rows_rings(rows: SessionRows, chosen: IntArray) -> list[bytes | None]:
    """The ring of each row in ``chosen`` (None without a window), sized as a store keeping
    ``rows.capacity`` values sizes it for the window's rows (app.window_ring.ring_slots)."""
    if rows.capacity == 0:
        return [None] * len(chosen)
    columns = rows.columns
    kept = columns.counts[chosen]
    if bool((kept == rows.capacity + 1).all()):
        # Full windows, the usual case: a row's ring has the file ring's slots, each step's
        # row in the same slot (app.session_rows), so it is the file's ring as it is.
        whole: list[bytes | None] = [*rings_bytes(columns.windows[chosen])]
        return whole
    pending = columns.steps[chosen] + 1  # the step of each window's last row (its pending one)
    heads = columns.heads[chosen]
    row_slots = columns.windows.shape[1]
    rings: list[bytes | None] = [None] * len(chosen)
    sizes = np.array([ring_slots(rows.capacity, count) for count in kept.tolist()])
    for slots in np.unique(sizes).tolist():
        (which,) = np.nonzero(sizes == slots)
        # Slot k of the ring holds the latest step up to the pending one that is k modulo the
        # slots: that many steps before the pending one, found that far behind the row's head.
        behind = (pending[which, None] - np.arange(slots)[None, :]) % slots
        taken = (heads[which, None] - behind) % row_slots
        windows = columns.windows[chosen[which, None], taken]
        for position, ring in zip(which.tolist(), rings_bytes(windows), strict=True):
            rings[position] = ring
    return rings


def rows_step_pieces(rows: SessionRows, chosen: IntArray) -> list[tuple[int, bytes, int, bytes]]:
    """What one step changed in the ring of each row in ``chosen`` (each with a full window
    before and after the step, so a ring of ``rows.capacity + 1`` slots, one step's row in each):
    the row of the value just fed and the new pending row, each as (byte offset, bytes)."""
    columns = rows.columns
    slots = rows.capacity + 1
    fed = columns.steps[chosen] % slots
    pending = (fed + 1) % slots
    changed = columns.windows[chosen[:, None], np.stack([fed, pending], axis=1)]
    size = row_size(changed.shape[2])
    pieces: list[tuple[int, bytes, int, bytes]] = []
    for data, fed_slot, pending_slot in zip(
        rings_bytes(changed), fed.tolist(), pending.tolist(), strict=True
    ):
        pieces.append((fed_slot * size, data[:size], pending_slot * size, data[size:]))
    return pieces
