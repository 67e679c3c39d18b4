"""One step of the trained LSTM -> Dense network in float64, compiled by numba.

A session's state is one float64 array: h, then c.

A Keras call per step is orders of magnitude slower (README has the figures). The service
checks at start-up that it agrees with the batch-1 Keras copy before it becomes ready, so it is
a faster evaluation of the same network, not a second model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import numpy.typing as npt

from forecast_core.arrays import FloatArray

# Scaled inputs are clamped to this (see _step_loops).
SCALED_INPUT_BOUND = 1e150
# Forecasts and interval bounds stay within the finite float64 range (JSON has no infinity).
FINITE_BOUND = 1.7976931348623157e308


def finite(value: float) -> float:
    """``value`` clamped to the finite float64 range."""
    return min(max(value, -FINITE_BOUND), FINITE_BOUND)


# The same, for compiled callers (the session step, app.session_rows' in-place step).
compiled_finite = numba.njit(cache=False, fastmath=False)(finite)


# Names of the arrays in the weights file, in Keras get_weights() order.
WEIGHT_NAMES = ("lstm/kernel", "lstm/recurrent_kernel", "lstm/bias", "dense/kernel", "dense/bias")


@dataclass(frozen=True)
class LstmWeights:
    """The trained arrays of LSTM(units) -> Dense(1), as float64."""

    kernel: FloatArray  # (1, 4 * units), gate order i, f, c, o as in Keras
    recurrent_kernel: FloatArray  # (units, 4 * units)
    bias: FloatArray  # (4 * units,)
    dense_kernel: FloatArray  # (units, 1)
    dense_bias: FloatArray  # (1,)
    # Derived once, everything in one array (the compiled step takes one argument, not five):
    # rows 0..units-1 the recurrent kernel, then the input kernel row, then the bias, then the
    # dense kernel followed by the dense bias. The gate pre-activations are halved where a
    # sigmoid is computed as 0.5 * tanh(0.5 * z) + 0.5.
    _packed: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        units = self.recurrent_kernel.shape[0]
        scale = np.full(4 * units, 0.5)
        scale[2 * units : 3 * units] = 1.0  # the candidate gate is a plain tanh
        packed = np.zeros((units + 3, 4 * units))
        packed[:units] = self.recurrent_kernel * scale
        packed[units] = self.kernel[0] * scale
        packed[units + 1] = self.bias * scale
        packed[units + 2, :units] = self.dense_kernel[:, 0]
        packed[units + 2, units] = self.dense_bias[0]
        packed.setflags(write=False)
        object.__setattr__(self, "_packed", packed)

    @classmethod
    def from_list(cls, arrays: list[npt.NDArray[np.floating]]) -> LstmWeights:
        """Build from arrays in Keras get_weights() order, checking their shapes agree."""
        if len(arrays) != len(WEIGHT_NAMES):
            raise ValueError(f"expected {len(WEIGHT_NAMES)} weight arrays, got {len(arrays)}")
        kernel, recurrent, bias, dense_kernel, dense_bias = (
            np.asarray(a, dtype=np.float64) for a in arrays
        )
        units = recurrent.shape[0] if recurrent.ndim == 2 else -1
        expected = {
            "lstm/kernel": (1, 4 * units),
            "lstm/recurrent_kernel": (units, 4 * units),
            "lstm/bias": (4 * units,),
            "dense/kernel": (units, 1),
            "dense/bias": (1,),
        }
        for name, array in zip(
            WEIGHT_NAMES, (kernel, recurrent, bias, dense_kernel, dense_bias), strict=True
        ):
            if array.shape != expected[name]:
                raise ValueError(f"{name} has shape {array.shape}, expected {expected[name]}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{name} contains non-finite values")
        return cls(kernel, recurrent, bias, dense_kernel, dense_bias)

    @property
    def units(self) -> int:
        return int(self.recurrent_kernel.shape[0])


def _step_loops(
    packed: FloatArray,
    state: FloatArray,
    new_state: FloatArray,
    value: float,
    minimum: float,
    span: float,
) -> float:
    # Plain loops, compiled to machine code by numba below: one call instead of a dozen numpy
    # ones, each of which pays numpy's dispatch (and evicts the CPU caches the request's
    # other work needs) for a few hundred multiplications. It writes the new state into
    # new_state and allocates nothing. Scaling happens here too, as in MinMaxScaler:
    # (value - minimum) / span in, y * span + minimum out.
    units = state.shape[0] // 2
    x = (value - minimum) / span
    # A finite value far outside the training range can overflow once scaled, and inf * 0
    # would put NaN into the state for good. Beyond 1e150 every gate the input reaches is
    # saturated already, so the bound changes no answer.
    x = min(max(x, -SCALED_INPUT_BOUND), SCALED_INPUT_BOUND)
    input_row, bias, dense = packed[units], packed[units + 1], packed[units + 2]
    y: float = dense[units]
    for k in range(units):
        # Gate order i, f, c, o; z = x W + h U + b for unit k of each.
        z_i = x * input_row[k] + bias[k]
        z_f = x * input_row[units + k] + bias[units + k]
        z_c = x * input_row[2 * units + k] + bias[2 * units + k]
        z_o = x * input_row[3 * units + k] + bias[3 * units + k]
        for j in range(units):
            h_j = state[j]
            z_i += h_j * packed[j, k]
            z_f += h_j * packed[j, units + k]
            z_c += h_j * packed[j, 2 * units + k]
            z_o += h_j * packed[j, 3 * units + k]
        # sigmoid(z) = 0.5 * tanh(z / 2) + 0.5 for the i, f, o gates (their z was pre-halved).
        cell = (0.5 * math.tanh(z_f) + 0.5) * state[units + k] + (
            0.5 * math.tanh(z_i) + 0.5
        ) * math.tanh(z_c)
        h = (0.5 * math.tanh(z_o) + 0.5) * math.tanh(cell)
        new_state[units + k] = cell
        new_state[k] = h
        y += h * dense[k]
    return y * span + minimum


# Compiled on first call (during start-up's check against Keras, not in a request); no
# fastmath, so the arithmetic is IEEE float64 in the order written.
_compiled_step = numba.njit(cache=False, fastmath=False)(_step_loops)


def zero_state(units: int) -> FloatArray:
    """The state of a fresh session; read-only, so one array can serve every session."""
    state = np.zeros(2 * units)
    state.setflags(write=False)
    return state


def lstm_step(
    weights: LstmWeights, state: FloatArray, value: float, minimum: float = 0.0, span: float = 1.0
) -> tuple[FloatArray, float]:
    """Feed one value; return the new state and the forecast of the next value.

    ``state`` is h then c, one array, left unchanged. Keras' LSTM: z = x W + h U + b;
    i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_c); c' = f c + i g; h' = o tanh(c'); then
    Dense: y = h' w + b_d. ``minimum`` and ``span`` scale the value in and the forecast out
    (the defaults leave both as they are).
    """
    new_state = np.empty(state.shape[0])
    y: float = _compiled_step(weights._packed, state, new_state, value, minimum, span)
    return new_state, y
