"""The batch-1 copy of the trained network, as compiled code checked against Keras at start."""

from __future__ import annotations

import logging

import numpy as np

from app.errors import ModelCheckFailed
from forecast_core.arrays import FloatArray
from forecast_core.artifact import Artifact, Manifest
from forecast_core.calibration import Calibration
from forecast_core.lstm_step import lstm_step, zero_state
from forecast_core.session_step import SessionStep

logger = logging.getLogger(__name__)

# Probe inputs for the start-up check, in scaled units: the training range and beyond it, both
# smooth and jumpy, so that a wrong gate order or a missing bias cannot pass by luck.
_PROBE_LENGTH = 64


def _probe_inputs() -> FloatArray:
    ramp = np.linspace(-0.5, 1.5, _PROBE_LENGTH // 2)
    jumps = np.random.default_rng(12345).uniform(-0.5, 1.5, _PROBE_LENGTH // 2)
    return np.concatenate([ramp, jumps])


# A session's state (forecast_core.session_step): one float64 array, never changed in place.
LstmState = FloatArray


class Forecaster:
    """One-step forecasts in raw units from a session's state; pure, thread-safe, microseconds.

    The session step (level or difference model, see forecast_core.session_step) is the one
    training evaluated; its LSTM step is checked against the batch-1 Keras copy at start-up.
    """

    def __init__(self, step: SessionStep, manifest: Manifest) -> None:
        self.step = step
        self.manifest = manifest
        self.version = manifest.version
        # Artifacts written before intervals have no calibration: they serve without intervals.
        self.calibration: Calibration | None = manifest.calibration
        step.compile_variants()
        # Bound once: these run on every request.
        self.zero_state = step.zero_state
        self.feed = step.feed
        self.forecast_ahead = step.forecast_ahead

    @classmethod
    def from_artifact(cls, artifact: Artifact, tolerance: float) -> Forecaster:
        """Rebuild at batch size 1, copy the weights, check the compiled step agrees with it."""
        forecaster = cls(artifact.session_step(), artifact.manifest)
        worst = forecaster.compare_with_keras(artifact)
        if not worst <= tolerance:
            raise ModelCheckFailed(artifact.version, worst, tolerance)
        logger.info("model %s checked: compiled step within %.2g of Keras", artifact.version, worst)
        return forecaster

    def compare_with_keras(self, artifact: Artifact) -> float:
        """Largest compiled-step-vs-Keras difference on the probe inputs, state carried.

        Keras gets the whole probe in one call of the batch-1 network built for that many
        steps (the same layers, the state carried from step to step): one call instead of one
        per value, so that a replica checking a new model under load stays quick."""
        import tensorflow as tf

        from forecast_core.network import build_network, copy_weights, reset_states

        probe = _probe_inputs()
        # float64 on both sides: a float32 reference alone differs visibly on large weights.
        model = build_network(
            1, artifact.manifest.architecture.units, dtype="float64", timesteps=len(probe)
        )
        copy_weights(artifact.weights, model)
        reset_states(model)
        keras_outputs = model(tf.constant(probe, shape=(1, len(probe), 1), dtype=tf.float64))
        expected = np.asarray(keras_outputs, dtype=np.float64).reshape(-1)
        weights = self.step.weights
        state = zero_state(weights.units)
        worst = 0.0
        # In scaled units: the compiled step's own scaling is left out (minimum 0, span 1).
        # Starting from a read-only zero state and carrying the state also compiles both
        # argument variants serving uses (read-only and writable state), here rather than in
        # the first request.
        for x, keras_output in zip(probe.tolist(), expected.tolist(), strict=True):
            state, output = lstm_step(weights, state, x)
            worst = max(worst, abs(keras_output - output))
        return worst
