"""Split-conformal calibration of forecast intervals, recorded by training, read by serving.

Errors are compared to a running scale: each session keeps an exponentially weighted mean of
its absolute one-step errors (``scale``, updated as each value is revealed, starting from
``initial_scale``), so that intervals widen where the series has become harder to forecast and
narrow where it calms down. Training feeds the chosen model the series from its start, as a
session would, and records on the selection window (data the network's weights were not fitted
to, see README) each forecast's *score*: its absolute error divided by the session's scale when
the forecast was made, for one-step forecasts and for h-step forecasts (forecasts fed back) up
to a horizon. The interval of level ``l`` is the forecast plus or minus the scale times the
split-conformal quantile of the scores: the ``ceil((n + 1) * l / 100)``-th smallest of ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from forecast_core.arrays import FloatArray

# Horizons recorded by default: past it, serving widens the last recorded width (see README).
DEFAULT_CALIBRATION_HORIZON = 24
# A value this far outside the training part's range (as a fraction of the range) is flagged.
TRAINING_RANGE_MARGIN = 0.1
# Weight of the newest error in a session's scale: about the last 20 errors count.
DEFAULT_SCALE_SMOOTHING = 2.0 / 21.0
# One error moves the scale as if it were at most this many times the initial scale: an absurd
# value cannot blow the intervals up for thousands of values (the offsets still adapt).
SCALE_ERROR_CAP = 100.0


class Calibration(BaseModel):
    """What serving needs to size intervals; part of the manifest (``manifest["calibration"]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: str = Field(description="where the scores come from: the selection window")
    start: int = Field(ge=0, description="index of the first forecast target in the window")
    length: int = Field(ge=1, description="forecast targets in the window")
    initial_scale: float = Field(
        gt=0, description="a fresh session's error scale: mean absolute one-step error"
    )
    scale_smoothing: float = Field(
        gt=0, le=1, description="weight of the newest absolute error in a session's scale"
    )
    # scores[h - 1]: sorted scores (absolute error / scale at the origin) of h-step forecasts.
    scores: list[list[float]] = Field(min_length=1)
    value_minimum: float = Field(description="smallest value of the training part (raw)")
    value_maximum: float = Field(description="largest value of the training part (raw)")

    @property
    def error_cap(self) -> float:
        """The largest absolute error a session's scale takes in (``next_scale``)."""
        return SCALE_ERROR_CAP * self.initial_scale

    @property
    def horizon(self) -> int:
        return len(self.scores)

    def quantile(self, level: float, horizon: int = 1) -> float:
        """The score of ``level`` % for forecasts ``horizon`` steps ahead: the interval's radius
        is this times the session's scale (see :meth:`quantiles`)."""
        return self.quantiles(level, horizon)[-1]

    def quantiles(self, level: float, horizon: int) -> list[float]:
        """The scores of ``level`` % for forecasts 1 .. ``horizon`` steps ahead.

        Each is the split-conformal quantile of its horizon's scores, or the largest score when
        there are too few for the level (``ceil((n + 1) l) > n``: the level is then not
        guaranteed; README says when). A farther forecast never gets a narrower interval than a
        nearer one (the running maximum), and past the recorded horizon the last recorded score
        grows like a random walk's spread, with the square root of the horizon.
        """
        quantiles: list[float] = []
        widest = 0.0
        for step in range(1, min(horizon, self.horizon) + 1):
            scores = self.scores[step - 1]
            rank = math.ceil((len(scores) + 1) * level / 100.0)
            widest = max(widest, scores[min(rank, len(scores)) - 1])
            quantiles.append(widest)
        for step in range(self.horizon + 1, horizon + 1):
            quantiles.append(widest * math.sqrt(step / self.horizon))
        return quantiles

    def training_range_bounds(self) -> tuple[float, float]:
        """Values outside these bounds are flagged: the training range widened by the margin."""
        margin = TRAINING_RANGE_MARGIN * (self.value_maximum - self.value_minimum)
        return self.value_minimum - margin, self.value_maximum + margin


class SteppableModel(Protocol):
    """What calibration needs of the served model (forecast_core's session step)."""

    def zero_state(self) -> FloatArray: ...

    def feed(
        self, state: FloatArray, values: Sequence[float]
    ) -> tuple[FloatArray, list[float]]: ...

    def forecast_ahead(
        self, state: FloatArray, last_forecast: float, horizon: int
    ) -> list[float]: ...


def _next_scale(scale: float, absolute_error: float, smoothing: float, cap: float) -> float:
    return (1.0 - smoothing) * scale + smoothing * min(absolute_error, cap)


# A session's error scale after one more revealed value: compiled, so that serving's compiled
# tracking step and training's calibration use this one definition.
next_scale = numba.njit(cache=False, fastmath=False)(_next_scale)


def calibrate(
    model: SteppableModel,
    series: FloatArray,
    window_start: int,
    window_end: int,
    training_values: FloatArray,
    horizon: int = DEFAULT_CALIBRATION_HORIZON,
    smoothing: float = DEFAULT_SCALE_SMOOTHING,
) -> Calibration:
    """Scores of ``model`` on targets ``series[window_start:window_end]``, state and scale
    carried from the series' start, for horizons 1 .. ``horizon`` (an h-step forecast is made
    at the value h - 1 before its target and needs the target inside the window)."""
    if not 1 <= window_start < window_end <= len(series):
        raise ValueError(f"calibration window {window_start}..{window_end} is not in the series")
    _, one_step = model.feed(model.zero_state(), series[: window_end - 1].tolist())
    # one_step[t] forecasts series[t + 1]
    absolute = np.abs(series[1:window_end] - np.asarray(one_step))
    initial_scale = float(np.mean(absolute[window_start - 1 :]))
    if not initial_scale > 0:
        initial_scale = float(np.max(absolute)) or 1.0
    state = model.zero_state()
    scale = initial_scale
    error_cap = SCALE_ERROR_CAP * initial_scale
    scores: list[list[float]] = [[] for _ in range(horizon)]
    for origin in range(window_end - 1):
        state, (forecast,) = model.feed(state, [float(series[origin])])
        if origin >= 1:  # the value at origin revealed the error of the forecast made before it
            scale = next_scale(scale, float(absolute[origin - 1]), smoothing, error_cap)
        if origin < window_start - 1:
            continue
        reach = min(horizon, window_end - 1 - origin)
        ahead = model.forecast_ahead(state, forecast, reach)
        for step, predicted in enumerate(ahead):
            error = abs(float(series[origin + 1 + step]) - predicted)
            scores[step].append(error / scale)  # scale > 0: it starts positive and decays
    return Calibration(
        window="selection",
        start=window_start,
        length=window_end - window_start,
        initial_scale=initial_scale,
        scale_smoothing=smoothing,
        scores=[sorted(s) for s in scores if s],
        value_minimum=float(np.min(training_values)),
        value_maximum=float(np.max(training_values)),
    )
