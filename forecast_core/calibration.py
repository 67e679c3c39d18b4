"""Split-conformal calibration of forecast intervals, recorded by training, read by serving.

Training feeds the chosen model the series from its start, as a session would, and records on
the selection window (data the network's weights were not fitted to, see README) the absolute
error of each one-step forecast and of each h-step forecast (forecasts fed back) for h up to a
horizon. The interval of level ``l`` around a forecast is then the forecast plus or minus the
split-conformal quantile of those errors: the ``ceil((n + 1) * l / 100)``-th smallest of ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from forecast_core.lstm_step import FloatArray

# Horizons recorded by default: past it, serving widens the last recorded width (see README).
DEFAULT_CALIBRATION_HORIZON = 24
# A value this far outside the training part's range (as a fraction of the range) is flagged.
TRAINING_RANGE_MARGIN = 0.1


class Calibration(BaseModel):
    """What serving needs to size intervals; part of the manifest (``manifest["calibration"]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: str = Field(description="where the residuals come from: the selection window")
    start: int = Field(ge=0, description="index of the first forecast target in the window")
    length: int = Field(ge=1, description="forecast targets in the window")
    # absolute_errors[h - 1]: the sorted absolute errors of the h-step forecasts in the window.
    absolute_errors: list[list[float]] = Field(min_length=1)
    value_minimum: float = Field(description="smallest value of the training part (raw)")
    value_maximum: float = Field(description="largest value of the training part (raw)")

    @property
    def horizon(self) -> int:
        return len(self.absolute_errors)

    def quantile(self, level: float, horizon: int = 1) -> float:
        """The split-conformal radius of ``level`` % for forecasts ``horizon`` steps ahead.

        With too few errors for the level (``ceil((n + 1) l) > n``) the largest error is used:
        the level is then not guaranteed (README says when). Past the recorded horizon the last
        recorded radius grows like a random walk's, with the square root of the horizon.
        """
        errors = self.absolute_errors[min(horizon, self.horizon) - 1]
        rank = math.ceil((len(errors) + 1) * level / 100.0)
        radius = errors[min(rank, len(errors)) - 1]
        if horizon > self.horizon:
            radius *= math.sqrt(horizon / self.horizon)
        return radius

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


def calibrate(
    model: SteppableModel,
    series: FloatArray,
    window_start: int,
    window_end: int,
    training_values: FloatArray,
    horizon: int = DEFAULT_CALIBRATION_HORIZON,
) -> Calibration:
    """Residuals of ``model`` on targets ``series[window_start:window_end]``, state carried from
    the series' start, for horizons 1 .. ``horizon`` (an h-step forecast is made at the value
    h - 1 before its target and needs the target inside the window)."""
    if not 1 <= window_start < window_end <= len(series):
        raise ValueError(f"calibration window {window_start}..{window_end} is not in the series")
    state = model.zero_state()
    state, _ = model.feed(state, series[: window_start - 1].tolist())
    errors: list[list[float]] = [[] for _ in range(horizon)]
    for origin in range(window_start - 1, window_end - 1):
        state, (forecast,) = model.feed(state, [float(series[origin])])
        reach = min(horizon, window_end - 1 - origin)
        ahead = model.forecast_ahead(state, forecast, reach)
        for step, predicted in enumerate(ahead):
            errors[step].append(abs(float(series[origin + 1 + step]) - predicted))
    recorded = [sorted(e) for e in errors if e]
    return Calibration(
        window="selection",
        start=window_start,
        length=window_end - window_start,
        absolute_errors=recorded,
        value_minimum=float(np.min(training_values)),
        value_maximum=float(np.max(training_values)),
    )
