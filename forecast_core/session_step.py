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

import numba
import numpy as np

from forecast_core.arrays import FloatArray
from forecast_core.lstm_step import LstmWeights, _compiled_step, compiled_finite
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
        packed, minimum, span = self.weights._packed, self.scaling.minimum, self.scaling.span
        shrink, difference = self.transform.shrink, self.transform.is_difference
        forecasts = []
        for value in values:
            new_state = np.empty(state.shape[0])
            forecasts.append(
                compiled_session_step(
                    packed, state, new_state, float(value), minimum, span, shrink, difference
                )
            )
            state = new_state
        return state, forecasts

    def compile_variants(self) -> None:
        """Compile the step for both kinds of state serving hands it (a fresh session's
        read-only zero state, a state a request or a store produced), here rather than in the
        first request."""
        state, _ = self.feed(self.zero_state(), [0.0, 0.0])
        self.feed(state, [0.0])

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


def _session_step(
    packed: FloatArray,
    state: FloatArray,
    new_state: FloatArray,
    value: float,
    minimum: float,
    span: float,
    shrink: float,
    difference: bool,
) -> float:
    # Compiled by numba below: the one step of a session for both transforms, called per value
    # by SessionStep.feed and per session by the in-place rows of app.session_rows. It writes
    # the new state into new_state (which must not be state) and returns the raw forecast.
    if not difference:
        return _compiled_step(packed, state, new_state, value, minimum, span)
    size = state.shape[0] - 1
    last = state[size]
    new_state[size] = value
    if math.isnan(last):  # the session's first value: recorded, forecast by persistence
        for index in range(size):
            new_state[index] = state[index]
        return value
    change = _compiled_step(packed, state[:size], new_state[:size], value - last, minimum, span)
    # A value near the float64 limit plus a difference could overflow.
    forecast: float = compiled_finite(value + shrink * change)
    return forecast


compiled_session_step = numba.njit(cache=False, fastmath=False)(_session_step)
