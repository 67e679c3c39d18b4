"""Each session's history window: its last raw values, the forecast served for each, its radii.

The window is what a session keeps across a model change (the new model's state is rebuilt by
replaying its values) and what ``GET /sessions/{id}/history`` shows. It is one float64 array of
shape ``(rows, 2 + L)`` for ``L`` interval levels, never changed in place::

    value_1   forecast_1   radius_1_1 .. radius_1_L     <- the oldest value kept
    ...
    value_n   forecast_n   radius_n_1 .. radius_n_L     <- the newest value
    NaN       forecast     radius_1 .. radius_L         <- pending: the forecast of the next value

``forecast_i`` is the one-step forecast the service answered before ``value_i`` arrived (NaN
where there was none: a session's first value), and ``radius_i_l`` the half-width of its
interval at the ``l``-th configured level (NaN: none). Radii, not offsets: they stay meaningful
after the model that made them is gone. Values and forecasts are kept exactly (float64: the
values are replayed); radii are rounded to float32 when they enter the window (7 significant
digits, for drawing), so that the stores keep them in 4 bytes and every store holds the same
window. Step numbers are not stored: the window's values are the session's last ``n``, so value
``i`` is step ``step - n + i``.

A window a store read from its ring comes as an app.window_ring.RingWindow, decoded only where
its rows are read (:func:`as_array`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import numba
import numpy as np

from app.window_ring import RingWindow
from forecast_core.arrays import FloatArray

# A window as rows, or as the ring a store read it from.
Window: TypeAlias = FloatArray | RingWindow


def as_array(history: Window | None) -> FloatArray | None:
    """The window's rows (decoded from its ring if it came as one)."""
    if isinstance(history, RingWindow):
        return history.array()
    return history


def pending_radii(tracking: FloatArray, parameters: FloatArray, levels: int) -> list[float]:
    """The radii of the pending forecast's intervals, from the session's tracking (the
    computation of :func:`_push_one`'s last row)."""
    return [
        float(parameters[3 + level]) * math.exp(float(tracking[levels + 1 + level]))
        for level in range(levels)
    ]


def _push_one(
    history: FloatArray,
    capacity: int,
    value: float,
    forecast: float,
    tracking: FloatArray,
    parameters: FloatArray,
    levels: int,
) -> FloatArray:
    # Compiled by numba below: this runs on every /predict.
    width = 2 + levels
    rows = history.shape[0]
    kept = min(rows - 1, capacity - 1) if rows > 0 else 0
    out = np.empty((kept + 2, width))
    if rows > 0:
        for row in range(kept):
            for column in range(width):
                out[row, column] = history[rows - 1 - kept + row, column]
        for column in range(width):
            out[kept, column] = history[rows - 1, column]
    else:
        for column in range(width):
            out[kept, column] = math.nan
    out[kept, 0] = value
    out[kept + 1, 0] = math.nan
    out[kept + 1, 1] = forecast
    for level in range(levels):
        out[kept + 1, 2 + level] = compiled_window_radius(tracking, parameters, levels, level)
    return out


def _interval_radius(
    tracking: FloatArray, parameters: FloatArray, levels: int, level: int
) -> float:
    # Compiled by numba below: the radius of a session's next one-step interval at the
    # ``level``-th adapted level, its calibrated score times exp(its log multiplier) (as
    # IntervalPolicy.intervals computes it in Python).
    radius: float = parameters[3 + level] * math.exp(tracking[levels + 1 + level])
    return radius


def _window_radius(tracking: FloatArray, parameters: FloatArray, levels: int, level: int) -> float:
    # Compiled by numba below: the pending forecast's radius as the window keeps it (rounded
    # to float32); app.session_rows' in-place push calls it too.
    return float(np.float32(compiled_interval_radius(tracking, parameters, levels, level)))


compiled_interval_radius = numba.njit(cache=False, fastmath=False)(_interval_radius)
compiled_window_radius = numba.njit(cache=False, fastmath=False)(_window_radius)
compiled_push_one = numba.njit(cache=False, fastmath=False)(_push_one)


def conform(window: Window | None, width: int) -> FloatArray | None:
    """``window`` with rows of ``width``: after the configured levels changed, the rows keep
    their values and forecasts and lose their radii (NaN: no interval). None or empty stays."""
    history = as_array(window)
    if history is None or history.shape[0] == 0 or history.shape[1] == width:
        return history
    out = np.full((history.shape[0], width), math.nan)
    out[:, :2] = history[:, :2]
    return out


def window_values(window: Window | None) -> FloatArray:
    """The raw values of the window, oldest first (empty without a history)."""
    history = as_array(window)
    if history is None or history.shape[0] < 2:
        return np.empty(0)
    return np.ascontiguousarray(history[:-1, 0])


def pending(window: Window | None) -> FloatArray | None:
    """The pending row (the forecast of the next value and its radii), or None."""
    history = as_array(window)
    if history is None or history.shape[0] == 0:
        return None
    row: FloatArray = history[-1]
    return row


def append(
    history: Window | None,
    capacity: int,
    values: Sequence[float],
    predictions: Sequence[float],
    multipliers: Sequence[float],
    scores: Sequence[float],
) -> FloatArray | None:
    """The window after ``values`` (any number), each with the forecast served for it: the
    pending one for the first, then the previous prediction. ``multipliers``: per value, the
    log multipliers of the calibrated ``scores`` in force after it (as ``FeedOutcome.offsets``),
    which size the interval of the prediction made after it."""
    if capacity <= 0:
        return None
    levels = len(scores)
    width = 2 + levels
    history = conform(history, width)
    count = len(values)
    new = np.empty((count + 1, width))
    new[:count, 0] = values
    new[count, 0] = math.nan
    last = pending(history)
    if last is not None:
        new[0, 1:] = last[1:]
    else:
        new[0, 1:] = math.nan
    new[1:, 1] = predictions
    if levels:
        logs = np.asarray(multipliers, dtype=np.float64).reshape(count, levels)
        radii = np.asarray(scores, dtype=np.float64) * np.exp(logs)
        new[1:, 2:] = radii.astype(np.float32)
    if count >= capacity:
        return new[count - capacity :].copy()
    if history is None or history.shape[0] < 2:
        return new
    return np.concatenate([history[:-1][-(capacity - count) :], new])
