"""A step on a window a store read as a ring: written into the ring's bytes, equal to the rows."""

from __future__ import annotations

import numpy as np

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import SessionRecord, feed
from app.window_ring import RingWindow, ring_bytes, ring_slots
from tests.helpers import window_rows

NOW = 1000.0


def _as_read(record: SessionRecord, history: int) -> SessionRecord:
    """``record`` as a store that keeps its window as a ring would read it back."""
    rows = window_rows(record)
    ring = ring_bytes(rows, record.step, ring_slots(history, rows.shape[0]))
    window = RingWindow.read(ring, rows.shape[0], rows.shape[1], record.step)
    return record._replace(history=window)


def _fed(
    record: SessionRecord | None,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    value: float,
    history: int,
) -> SessionRecord:
    new, _ = feed(record, forecaster, policy, [value], None, NOW, history=history)
    assert new is not None
    return new


def test_steps_written_into_the_ring_give_the_rows_a_step_on_rows_gives(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """Step after step (the ring growing, then full and wrapping around), the window kept as
    a ring equals, bit for bit, the one kept as rows; a full ring is never rebuilt."""
    history = 5
    as_rows: SessionRecord | None = None
    as_ring: SessionRecord | None = None
    rebuilt = 0
    for step in range(3 * history):
        value = 0.1 * (step % 7)
        as_rows = _fed(as_rows, forecaster, policy, value, history)
        read = _as_read(as_ring, history) if as_ring is not None else None
        as_ring = _fed(read, forecaster, policy, value, history)
        pushed = isinstance(as_ring.history, RingWindow)
        if read is not None and not pushed:
            rebuilt += 1
        if step > history:  # full: the ring is the window's size
            assert pushed
        assert np.array_equal(window_rows(as_ring), window_rows(as_rows), equal_nan=True)
    assert rebuilt <= 3  # only while the young ring doubled


def test_a_pushed_window_says_which_bytes_of_its_ring_changed(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    history = 4
    record: SessionRecord | None = None
    for value in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        record = _fed(record, forecaster, policy, value, history)
    assert record is not None
    read = _as_read(record, history)
    new = _fed(read, forecaster, policy, 0.7, history)
    window = new.history
    assert isinstance(window, RingWindow) and isinstance(read.history, RingWindow)
    assert window.pushed_from(read.history)
    patched = bytearray(read.history.ring)
    for offset, data in window.pieces:
        patched[offset : offset + len(data)] = data
    assert bytes(patched) == window.ring
    assert sum(len(data) for _, data in window.pieces) < len(window.ring) // 2


def test_a_smaller_window_configured_keeps_the_newest_rows(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """A rollout that lowers FORECAST_SESSION_HISTORY: the ring keeps its size, the window
    its newest values."""
    record: SessionRecord | None = None
    for value in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        record = _fed(record, forecaster, policy, value, 6)
    assert record is not None
    new = _fed(_as_read(record, 6), forecaster, policy, 0.8, 3)
    expected = _fed(record, forecaster, policy, 0.8, 3)
    assert isinstance(new.history, RingWindow)
    assert np.array_equal(window_rows(new), window_rows(expected), equal_nan=True)
    assert window_rows(new)[:-1, 0].tolist() == [0.6, 0.7, 0.8]


def test_several_values_on_a_ring_are_applied_as_rows(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    record: SessionRecord | None = None
    for value in (0.1, 0.2, 0.3):
        record = _fed(record, forecaster, policy, value, 4)
    assert record is not None
    new, _ = feed(_as_read(record, 4), forecaster, policy, [0.4, 0.5], None, NOW, history=4)
    expected, _ = feed(record, forecaster, policy, [0.4, 0.5], None, NOW, history=4)
    assert new is not None and expected is not None
    assert not isinstance(new.history, RingWindow)
    assert np.array_equal(window_rows(new), window_rows(expected), equal_nan=True)


def test_a_kept_window_does_not_keep_the_rings_before_it(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """A store that keeps the record it wrote (Redis's cache) and pushes it again must not
    chain the rings its session had."""
    record: SessionRecord | None = None
    for value in (0.1, 0.2, 0.3, 0.4):
        record = _fed(record, forecaster, policy, value, 3)
    assert record is not None
    read = _as_read(record, 3)
    first = read.history
    assert isinstance(first, RingWindow)
    pushed = _fed(read, forecaster, policy, 0.5, 3)
    window = pushed.history
    assert isinstance(window, RingWindow) and window.pushed_from(first)
    kept = window.settled()
    assert kept.base is None and kept.ring is window.ring
    again = _fed(pushed._replace(history=kept), forecaster, policy, 0.6, 3)
    assert isinstance(again.history, RingWindow) and again.history.pushed_from(kept)
    assert not again.history.pushed_from(first) and again.history.base is not first.ring
