"""The batch-1 copy of the trained network, as compiled code checked against Keras at start."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from app.errors import ModelCheckFailed
from forecast_core.artifact import Artifact, Manifest
from forecast_core.calibration import Calibration
from forecast_core.lstm_step import FloatArray, LstmWeights, lstm_step, zero_state
from forecast_core.scaling import MinMaxScaler

logger = logging.getLogger(__name__)

# Probe inputs for the start-up check, in scaled units: the training range and beyond it, both
# smooth and jumpy, so that a wrong gate order or a missing bias cannot pass by luck.
_PROBE_LENGTH = 64


def _probe_inputs() -> FloatArray:
    ramp = np.linspace(-0.5, 1.5, _PROBE_LENGTH // 2)
    jumps = np.random.default_rng(12345).uniform(-0.5, 1.5, _PROBE_LENGTH // 2)
    return np.concatenate([ramp, jumps])


# A session's LSTM state: h then c in one float64 array, never changed in place.
LstmState = FloatArray


class Forecaster:
    """One-step forecasts in raw units from a session's state; pure, thread-safe, microseconds."""

    def __init__(self, weights: LstmWeights, scaler: MinMaxScaler, manifest: Manifest) -> None:
        self.weights = weights
        self.scaler = scaler
        self.manifest = manifest
        self.version = manifest.version
        # Artifacts written before intervals have no calibration: they serve without intervals.
        self.calibration: Calibration | None = getattr(manifest, "calibration", None)
        self._zero_state = zero_state(weights.units)

    @classmethod
    def from_artifact(cls, artifact: Artifact, tolerance: float) -> Forecaster:
        """Rebuild at batch size 1, copy the weights, check the compiled step agrees with it."""
        forecaster = cls(artifact.lstm_weights(), artifact.manifest.scaler(), artifact.manifest)
        worst = forecaster.compare_with_keras(artifact)
        if not worst <= tolerance:
            raise ModelCheckFailed(artifact.version, worst, tolerance)
        logger.info("model %s checked: compiled step within %.2g of Keras", artifact.version, worst)
        return forecaster

    def compare_with_keras(self, artifact: Artifact) -> float:
        """Largest compiled-step-vs-Keras difference on the probe inputs, state carried."""
        import tensorflow as tf

        from forecast_core.network import build_network, copy_weights, reset_states

        # float64 on both sides: a float32 reference alone differs visibly on large weights.
        model = build_network(1, artifact.manifest.architecture.units, dtype="float64")
        copy_weights(artifact.weights, model)
        reset_states(model)
        state = self.zero_state()
        worst = 0.0
        # In scaled units: the compiled step's own scaling is left out (minimum 0, span 1).
        # Starting from the shared read-only zero state and carrying the state also compiles
        # both argument variants serving uses (read-only and writable state), here rather than
        # in the first request.
        for x in _probe_inputs():
            keras_output = float(model(tf.constant(x, shape=(1, 1, 1), dtype=tf.float64))[0, 0])
            state, output = lstm_step(self.weights, state, float(x))
            worst = max(worst, abs(keras_output - output))
        return worst

    def zero_state(self) -> LstmState:
        return self._zero_state

    def feed(self, state: LstmState, values: Sequence[float]) -> tuple[LstmState, list[float]]:
        """Feed raw values in order; return the new state and the raw forecast after each."""
        weights, minimum, span = self.weights, self.scaler.minimum, self.scaler.span
        predictions = []
        for value in values:
            state, prediction = lstm_step(weights, state, value, minimum, span)
            predictions.append(prediction)
        return state, predictions

    def forecast_ahead(self, state: LstmState, last_prediction: float, horizon: int) -> list[float]:
        """Forecast ``horizon`` values, feeding each forecast back as the next input."""
        forecasts = [last_prediction]
        for _ in range(horizon - 1):
            state, (next_value,) = self.feed(state, [forecasts[-1]])
            forecasts.append(next_value)
        return forecasts
