"""One step of the trained LSTM -> Dense network in float64, compiled by numba.

A Keras call costs milliseconds; this about two microseconds. The service checks at start-up
that it agrees with the batch-1 Keras copy before it becomes ready, so it is a faster evaluation
of the same network, not a second model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

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
    # Derived once: contiguous arrays for the compiled step, and gate pre-activations halved
    # where a sigmoid is computed as 0.5 * tanh(0.5 * z) + 0.5.
    _input_row: FloatArray = field(init=False, repr=False, compare=False)
    _recurrent: FloatArray = field(init=False, repr=False, compare=False)
    _bias: FloatArray = field(init=False, repr=False, compare=False)
    _dense: FloatArray = field(init=False, repr=False, compare=False)
    _dense_bias: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        units = self.recurrent_kernel.shape[0]
        scale = np.full(4 * units, 0.5)
        scale[2 * units : 3 * units] = 1.0  # the candidate gate is a plain tanh
        object.__setattr__(self, "_input_row", np.ascontiguousarray(self.kernel[0] * scale))
        object.__setattr__(self, "_recurrent", np.ascontiguousarray(self.recurrent_kernel * scale))
        object.__setattr__(self, "_bias", np.ascontiguousarray(self.bias * scale))
        object.__setattr__(self, "_dense", np.ascontiguousarray(self.dense_kernel[:, 0]))
        object.__setattr__(self, "_dense_bias", float(self.dense_bias[0]))

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
    recurrent: FloatArray,
    input_row: FloatArray,
    bias: FloatArray,
    dense: FloatArray,
    dense_bias: float,
    h: FloatArray,
    c: FloatArray,
    x_scaled: float,
) -> tuple[FloatArray, FloatArray, float]:
    # Plain loops, compiled to machine code by numba below: one call instead of a dozen numpy
    # ones, each of which costs ~0.5 µs of dispatch (and evicts the CPU caches the request's
    # other work needs) for a few dozen multiplications.
    units = h.shape[0]
    t = np.empty(4 * units)
    for j in range(4 * units):
        z = x_scaled * input_row[j] + bias[j]
        for k in range(units):
            z += h[k] * recurrent[k, j]
        t[j] = math.tanh(z)
    h_next = np.empty(units)
    c_next = np.empty(units)
    y = dense_bias
    for k in range(units):
        # sigmoid(z) = 0.5 * tanh(z / 2) + 0.5 for the i, f, o gates (their z was pre-halved).
        input_gate = 0.5 * t[k] + 0.5
        forget_gate = 0.5 * t[units + k] + 0.5
        output_gate = 0.5 * t[3 * units + k] + 0.5
        cell = forget_gate * c[k] + input_gate * t[2 * units + k]
        c_next[k] = cell
        h_next[k] = output_gate * math.tanh(cell)
        y += h_next[k] * dense[k]
    return h_next, c_next, y


# Compiled on first call (about half a second, during start-up's check against Keras); no
# fastmath, so the arithmetic is IEEE float64 in the order written.
_compiled_step = numba.njit(cache=False, fastmath=False, nogil=True)(_step_loops)


def lstm_step(
    weights: LstmWeights, h: FloatArray, c: FloatArray, x_scaled: float
) -> tuple[FloatArray, FloatArray, float]:
    """Advance (h, c) by one scaled input; return the new state and the scaled forecast.

    Keras' LSTM: z = x W + h U + b; i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_c);
    c' = f c + i g; h' = o tanh(c'); then Dense: y = h' w + b_d.
    """
    h_next, c_next, y = _compiled_step(
        weights._recurrent,
        weights._input_row,
        weights._bias,
        weights._dense,
        weights._dense_bias,
        h,
        c,
        x_scaled,
    )
    return h_next, c_next, y
