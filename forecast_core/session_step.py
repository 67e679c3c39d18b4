"""The one definition of a serving step, for both transforms: raw values in, raw forecasts out.

Serving calls it per request and training's evaluation calls it over whole series, so what the
job reports is what a session gets.

A session's state is one float64 array, never changed in place:

- level: h then c (``2 * units`` floats);
- difference: h, c, then the session's last raw value (``2 * units + 1`` floats; NaN before
  the session's first value). A session's first value only records the value (its forecast is
  that value, persistence; the network is not stepped). From the second value on, the network
  is fed the scaled difference ``value - last`` and the forecast is
  ``value + shrink * unscale(output)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from forecast_core.arrays import FloatArray
from forecast_core.lstm_step import LstmWeights, finite, lstm_step
from forecast_core.scaling import MinMaxScaler
from forecast_core.transform import Transform


class SessionStep:
    """Forecasts from a session's state with the trained network; pure and thread-safe."""

    def __init__(self, weights: LstmWeights, transform: Transform, scaling: MinMaxScaler) -> None:
        self.weights = weights
        self.transform = transform
        self.scaling = scaling
        self._lstm_size = 2 * weights.units
        size = self._lstm_size + (1 if transform.is_difference else 0)
        zero = np.zeros(size)
        if transform.is_difference:
            zero[-1] = math.nan
        zero.setflags(write=False)
        self._zero_state = zero

    @property
    def state_size(self) -> int:
        """Floats in a session's state."""
        return int(self._zero_state.shape[0])

    def zero_state(self) -> FloatArray:
        """The state of a fresh session; read-only, so one array can serve every session."""
        return self._zero_state

    def feed(self, state: FloatArray, values: Sequence[float]) -> tuple[FloatArray, list[float]]:
        """Feed raw values in order; return the new state and the raw forecast after each."""
        if self.transform.is_difference:
            return self._feed_differences(state, values)
        weights, minimum, span = self.weights, self.scaling.minimum, self.scaling.span
        forecasts = []
        for value in values:
            state, forecast = lstm_step(weights, state, value, minimum, span)
            forecasts.append(forecast)
        return state, forecasts

    def _feed_differences(
        self, state: FloatArray, values: Sequence[float]
    ) -> tuple[FloatArray, list[float]]:
        weights, minimum, span = self.weights, self.scaling.minimum, self.scaling.span
        shrink = self.transform.shrink
        lstm_state = state[: self._lstm_size]
        last = float(state[self._lstm_size])
        forecasts = []
        for value in values:
            if math.isnan(last):
                forecasts.append(value)
            else:
                lstm_state, difference = lstm_step(weights, lstm_state, value - last, minimum, span)
                # A value near the float64 limit plus a difference could overflow.
                forecasts.append(finite(value + shrink * difference))
            last = value
        new_state = np.empty(self._lstm_size + 1)
        new_state[: self._lstm_size] = lstm_state
        new_state[self._lstm_size] = last
        return new_state, forecasts

    def forecast_ahead(self, state: FloatArray, last_forecast: float, horizon: int) -> list[float]:
        """Forecast ``horizon`` values, feeding each forecast back as the next value."""
        forecasts = [last_forecast]
        for _ in range(horizon - 1):
            state, (next_value,) = self.feed(state, [forecasts[-1]])
            forecasts.append(next_value)
        return forecasts

    def one_step_forecasts(self, series: FloatArray) -> FloatArray:
        """Forecasts of series[1:] by one session fed series[:-1] from a fresh state."""
        _, forecasts = self.feed(self.zero_state(), series[:-1].tolist())
        return np.asarray(forecasts, dtype=np.float64)
