"""Each session's own record of how well it is forecast: adaptive interval widths and live skill.

When a session's next value arrives, the service learns the error of the forecast it gave for
it. This module folds that error into one float64 array kept in the session record:

- its error scale: an exponentially weighted mean of its absolute errors
  (``forecast_core.calibration.next_scale``), starting at the model's ``initial_scale``;
- per configured level, an offset ``theta`` (natural log): the session's interval radius is the
  model's calibrated score times the scale times ``exp(theta)``. After each revealed value,
  ``theta`` moves by ``rate * (missed - alpha)`` (``alpha`` = 1 - level / 100): quantile
  tracking of the log score, the online conformal update of Angelopoulos, Candes and Tibshirani
  (2023, "Conformal PID control for time series prediction"). Whatever the series does, if the
  log errors relative to the scaled calibrated radius stay within [-B, B], the long-run miss
  rate satisfies
  ``|misses / T - alpha| <= (B + rate) / (rate * T)``: coverage holds after a regime change,
  at a speed set by ``rate``. The update is arithmetic on the values alone, so every store and
  replica computes the same widths from the same values.
- life totals: count, sum of absolute errors, of squared errors, of the persistence forecast's
  squared errors (next = last), and interval hits per level;
- the last ``window`` errors, persistence errors and hits, in a ring, for the recent figures.

Layout, for ``L`` levels and a window of ``K``::

    [theta_1 .. theta_L, scale, m_1 .. m_L,
     count, sum_abs, sum_sq, sum_naive_sq, hits_1 .. hits_L,
     ring_next, ring_filled,
     K rows of (error, naive_error, hit_1 .. hit_L)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from forecast_core.arrays import FloatArray
from forecast_core.calibration import next_scale

# theta stays within this many e-folds of the calibrated radius: exp(50) is far past any useful
# width, and the bound keeps a constant series (every error zero) from driving it to -inf.
_THETA_BOUND = 50.0


@dataclass(frozen=True)
class TrackingLayout:
    """Where each figure lives in a session's tracking array."""

    levels: int
    window: int
    size: int = field(init=False)  # read on every request: computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", self.ring + self.window * self.row)

    @property
    def scale(self) -> int:
        return self.levels

    @property
    def multipliers(self) -> slice:
        """Where each level's log multiplier of its calibrated score is: theta + log(scale),
        kept ready so that answering needs no arithmetic in Python."""
        return slice(self.levels + 1, 2 * self.levels + 1)

    @property
    def totals(self) -> int:
        return 2 * self.levels + 1

    @property
    def ring_header(self) -> int:
        return 3 * self.levels + 5

    @property
    def ring(self) -> int:
        return self.ring_header + 2

    @property
    def row(self) -> int:
        return 2 + self.levels

    def fresh(self, initial_scale: float) -> FloatArray:
        """The tracking of a session with no revealed value yet (read-only, shared)."""
        array = np.zeros(self.size)
        array[self.scale] = initial_scale
        array[self.multipliers] = math.log(initial_scale)
        array.setflags(write=False)
        return array


def tracking_parameters(
    scores: Sequence[float], alphas: Sequence[float], rate: float, smoothing: float, cap: float
) -> FloatArray:
    """The tracking step's parameters in one array: rate, smoothing, error cap, the levels'
    calibrated scores, then their alphas."""
    parameters = np.array([rate, smoothing, cap, *scores, *alphas], dtype=np.float64)
    parameters.setflags(write=False)
    return parameters


def _track_in_place(
    tracking: FloatArray, error: float, naive_error: float, parameters: FloatArray, levels: int
) -> int:
    # Compiled by numba below: one call per revealed value instead of dozens of numpy ones.
    # Changes ``tracking`` in place (each figure is read before it is written) and returns a
    # bit per level the value missed; the in-place rows of app.session_rows call it directly.
    rate, smoothing, error_cap = parameters[0], parameters[1], parameters[2]
    absolute = abs(error)
    scale = tracking[levels]
    multipliers = levels + 1
    totals = 2 * levels + 1
    tracking[totals] += 1.0
    tracking[totals + 1] += absolute
    tracking[totals + 2] += error * error
    tracking[totals + 3] += naive_error * naive_error
    ring_header = 3 * levels + 5
    row_size = 2 + levels
    window = (tracking.shape[0] - ring_header - 2) // row_size
    slot = int(tracking[ring_header])
    row = ring_header + 2 + slot * row_size
    tracking[row] = error
    tracking[row + 1] = naive_error
    misses = 0
    for level in range(levels):
        theta = tracking[level]
        radius = parameters[3 + level] * math.exp(tracking[multipliers + level])
        missed = 1.0 if absolute > radius else 0.0
        if missed > 0.0:
            misses |= 1 << level
        tracking[totals + 4 + level] += 1.0 - missed
        tracking[row + 2 + level] = 1.0 - missed
        theta += rate * (missed - parameters[3 + levels + level])
        tracking[level] = min(max(theta, -_THETA_BOUND), _THETA_BOUND)
    new_scale = next_scale(scale, absolute, smoothing, error_cap)
    tracking[levels] = new_scale
    log_scale = math.log(new_scale)
    for level in range(levels):
        tracking[multipliers + level] = tracking[level] + log_scale
    tracking[ring_header] = (slot + 1) % window
    tracking[ring_header + 1] = min(tracking[ring_header + 1] + 1.0, float(window))
    return misses


compiled_track_in_place = numba.njit(cache=False, fastmath=False)(_track_in_place)


def _track_loops(
    tracking: FloatArray, error: float, naive_error: float, parameters: FloatArray, levels: int
) -> tuple[FloatArray, int]:
    # Compiled by numba below: the tracking array is never changed in place in a record.
    out = tracking.copy()
    misses = compiled_track_in_place(out, error, naive_error, parameters, levels)
    return out, misses


compiled_track = numba.njit(cache=False, fastmath=False)(_track_loops)


def track(
    tracking: FloatArray, error: float, naive_error: float, parameters: FloatArray, levels: int
) -> tuple[FloatArray, int]:
    """Fold one revealed value in; return the new tracking and a bit per level it missed."""
    out, misses = compiled_track(tracking, error, naive_error, parameters, levels)
    return out, int(misses)


def _figures(
    count: float, sum_abs: float, sum_sq: float, sum_naive_sq: float, hits: list[float]
) -> dict[str, Any] | None:
    if count == 0:
        return None
    rmse = math.sqrt(sum_sq / count)
    naive_rmse = math.sqrt(sum_naive_sq / count)
    return {
        "count": int(count),
        "mae": sum_abs / count,
        "rmse": rmse,
        "persistence_rmse": naive_rmse,
        "skill": 1.0 - rmse / naive_rmse if naive_rmse > 0 else None,
        "coverage": [h / count for h in hits],
    }


def summarize(
    tracking: FloatArray, layout: TrackingLayout
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(life, recent) figures; None where no value has been revealed yet."""
    levels = layout.levels
    totals = tracking[layout.totals : layout.totals + 4 + levels].tolist()
    life = _figures(totals[0], totals[1], totals[2], totals[3], totals[4:])
    filled = int(tracking[layout.ring_header + 1])
    rows = tracking[layout.ring : layout.ring + filled * layout.row].reshape(filled, layout.row)
    with np.errstate(over="ignore"):  # errors of huge values square to infinity: reported so
        recent = _figures(
            float(filled),
            float(np.abs(rows[:, 0]).sum()),
            float((rows[:, 0] ** 2).sum()),
            float((rows[:, 1] ** 2).sum()),
            rows[:, 2:].sum(axis=0).tolist(),
        )
    return life, recent
