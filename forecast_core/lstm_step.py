"""One step of the trained LSTM -> Dense network in float64 numpy.

A Keras call costs milliseconds; this costs microseconds. The service checks at start-up that it
agrees with the batch-1 Keras copy before it becomes ready, so it is a faster evaluation of the
same network, not a second model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # Derived once, for a step of as few numpy calls as possible (each costs ~0.5 µs, far more
    # than its arithmetic): the input row, and gate pre-activations halved where a sigmoid is
    # computed as 0.5 * tanh(0.5 * z) + 0.5, so that one tanh call covers all four gates.
    _input_row: FloatArray = field(init=False, repr=False, compare=False)
    _recurrent: FloatArray = field(init=False, repr=False, compare=False)
    _bias: FloatArray = field(init=False, repr=False, compare=False)
    _dense: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        units = self.recurrent_kernel.shape[0]
        scale = np.full(4 * units, 0.5)
        scale[2 * units : 3 * units] = 1.0  # the candidate gate is a plain tanh
        object.__setattr__(self, "_input_row", np.ascontiguousarray(self.kernel[0] * scale))
        object.__setattr__(self, "_recurrent", np.ascontiguousarray(self.recurrent_kernel * scale))
        object.__setattr__(self, "_bias", np.ascontiguousarray(self.bias * scale))
        object.__setattr__(self, "_dense", np.ascontiguousarray(self.dense_kernel[:, 0]))

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


def lstm_step(
    weights: LstmWeights, h: FloatArray, c: FloatArray, x_scaled: float
) -> tuple[FloatArray, FloatArray, float]:
    """Advance (h, c) by one scaled input; return the new state and the scaled forecast.

    Keras' LSTM: z = x W + h U + b; i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_c);
    c' = f c + i g; h' = o tanh(c'); then Dense: y = h' w + b_d.
    """
    units = len(h)
    # ndarray.dot: a third of the per-call cost of the @ operator on arrays this small.
    t = np.tanh(h.dot(weights._recurrent) + (x_scaled * weights._input_row + weights._bias))
    # sigmoid(z) = 0.5 * tanh(z / 2) + 0.5 for the i, f, o gates (their z was pre-halved).
    gates = 0.5 * t + 0.5
    c_next = gates[units : 2 * units] * c + gates[:units] * t[2 * units : 3 * units]
    h_next = gates[3 * units :] * np.tanh(c_next)
    y = float(h_next.dot(weights._dense)) + float(weights.dense_bias[0])
    return h_next, c_next, y
