"""The serving step against the Keras networks it stands for, without HTTP."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.errors import ModelCheckFailed
from app.forecaster import Forecaster
from forecast_core.network import build_network, copy_weights, reset_states
from forecast_core.transform import TransformKind
from training.data import contiguous_starts, layout_streams, network_series, tutorial_series


def _keras_batch1(artifact, dtype: str = "float64"):
    model = build_network(1, artifact.manifest.architecture.units, dtype=dtype)
    copy_weights(artifact.weights, model)
    reset_states(model)
    return model


def test_session_gets_exactly_what_the_batch1_keras_copy_gives(tutorial_artifact, forecaster):
    values = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.35, -0.2, 1.4]
    model = _keras_batch1(tutorial_artifact)
    scaler = forecaster.step.scaling
    expected = [
        float(scaler.unscale(model(np.full((1, 1, 1), scaler.scale(v)), training=False)[0, 0]))
        for v in values
    ]
    _state, predictions = forecaster.feed(forecaster.zero_state(), values)
    np.testing.assert_allclose(predictions, expected, atol=1e-9, rtol=0)
    # And the float32 copy that the tutorial would build agrees to float32 precision.
    model32 = _keras_batch1(tutorial_artifact, "float32")
    expected32 = [
        float(scaler.unscale(model32(np.full((1, 1, 1), scaler.scale(v), "float32"))[0, 0]))
        for v in values
    ]
    np.testing.assert_allclose(predictions, expected32, atol=1e-5, rtol=0)


def test_feeding_in_pieces_equals_feeding_at_once(forecaster):
    values = [0.0, 0.1, 0.2, 0.3, 0.4]
    state, first = forecaster.feed(forecaster.zero_state(), values[:2])
    state, rest = forecaster.feed(state, values[2:])
    _, together = forecaster.feed(forecaster.zero_state(), values)
    assert first + rest == together


def test_n_sessions_fed_the_training_streams_reproduce_the_batch_n_model(
    tutorial_artifact, forecaster
):
    batch_size = tutorial_artifact.manifest.training.batch_size
    series = network_series(tutorial_series().values, TransformKind.LEVEL)
    length = len(series.inputs) // batch_size
    inputs = layout_streams(
        series.inputs, contiguous_starts(len(series.inputs), batch_size), length
    )
    units = tutorial_artifact.manifest.architecture.units
    model = build_network(batch_size, units, dtype="float64")
    copy_weights(tutorial_artifact.weights, model)
    reset_states(model)
    states = [forecaster.zero_state() for _ in range(batch_size)]
    for batch in inputs:
        batch_outputs = model(batch.astype("float64"), training=False).numpy()[:, 0]
        for row in range(batch_size):
            raw_value = float(forecaster.step.scaling.unscale(batch[row, 0, 0]))
            states[row], (prediction,) = forecaster.feed(states[row], [raw_value])
            assert forecaster.step.scaling.scale(prediction) == pytest.approx(
                batch_outputs[row], abs=1e-9
            )


def test_forecast_ahead_feeds_forecasts_back(forecaster):
    state, predictions = forecaster.feed(forecaster.zero_state(), [0.0, 0.1, 0.2])
    ahead = forecaster.forecast_ahead(state, predictions[-1], 3)
    state2, (second,) = forecaster.feed(state, [predictions[-1]])
    _, (third,) = forecaster.feed(state2, [second])
    assert ahead == [predictions[-1], second, third]
    assert [round(v, 1) for v in ahead] == [0.3, 0.4, 0.5]


def test_a_step_that_disagrees_with_keras_is_refused(tutorial_artifact):
    # Swap the input and forget gates' kernels: a plausible bug in a hand-written step.
    weights = [w.copy() for w in tutorial_artifact.weights]
    units = tutorial_artifact.manifest.architecture.units
    kernel = weights[0]
    kernel[:, :units], kernel[:, units : 2 * units] = (
        kernel[:, units : 2 * units].copy(),
        kernel[:, :units].copy(),
    )
    doctored = dataclasses.replace(tutorial_artifact, weights=weights)
    forecaster = Forecaster(doctored.session_step(), doctored.manifest)
    # The compiled step runs the doctored weights while Keras runs the real ones.
    assert forecaster.compare_with_keras(tutorial_artifact) > 1e-3

    class Mismatched(Forecaster):
        def __init__(self, *args, **kwargs):
            super().__init__(doctored.session_step(), doctored.manifest)

    with pytest.raises(ModelCheckFailed, match="disagrees with the batch-1 Keras copy"):
        Mismatched.from_artifact(tutorial_artifact, tolerance=1e-5)


def test_start_up_check_compiled_every_variant_serving_uses(forecaster, policy):
    # A variant compiled in a request would stall the event loop while numba compiles it.
    from app.session_rules import feed
    from app.session_tracking import compiled_track
    from app.stores.record_codec import decode_record, encode_record
    from forecast_core.lstm_step import _compiled_step

    compiled = len(_compiled_step.signatures), len(compiled_track.signatures)
    record, _ = feed(
        None, forecaster, policy, [0.1, 2.0], None, 1000.0
    )  # from the shared zero state
    assert record is not None
    record, _ = feed(record, forecaster, policy, [0.3], None, 1001.0)  # from a state it computed
    assert record is not None
    decoded = decode_record(encode_record(record))  # from a state a store read back
    forecaster.feed(decoded.state, [0.4])
    forecaster.forecast_ahead(decoded.state, 0.4, 3)
    assert (len(_compiled_step.signatures), len(compiled_track.signatures)) == compiled
