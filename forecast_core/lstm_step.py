"""One step of the trained LSTM -> Dense network in float64 numpy.

A Keras call costs milliseconds; this costs microseconds. The service checks at start-up that it
agrees with the batch-1 Keras copy before it becomes ready, so it is a faster evaluation of the
same network, not a second model.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def from_list(cls, arrays: list[npt.NDArray[np.floating]]) -> LstmWeights:
        """Build from arrays in Keras get_weights() order, checking their shapes agree."""
        if len(arrays) != len(WEIGHT_NAMES):
            raise ValueError(f"expected {len(WEIGHT_NAMES)} weight arrays, got {len(arrays)}")
        kernel, recurrent, bias, dense_kernel, dense_bias = (
            np.asarray(a, dtype=np.float64) for a in arrays
        )
        units = recurrent.shape[0]
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


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return result


def lstm_step(
    weights: LstmWeights, h: FloatArray, c: FloatArray, x_scaled: float
) -> tuple[FloatArray, FloatArray, float]:
    """Advance (h, c) by one scaled input; return the new state and the scaled forecast."""
    units = weights.units
    z = x_scaled * weights.kernel[0] + h @ weights.recurrent_kernel + weights.bias
    gates = _sigmoid(z)
    input_gate = gates[:units]
    forget_gate = gates[units : 2 * units]
    output_gate = gates[3 * units :]
    candidate = np.tanh(z[2 * units : 3 * units])
    c_next = forget_gate * c + input_gate * candidate
    h_next = output_gate * np.tanh(c_next)
    y = float(h_next @ weights.dense_kernel[:, 0] + weights.dense_bias[0])
    return h_next, c_next, y
