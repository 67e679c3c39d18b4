"""The serving step of both transforms against the batch-N network it stands for."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from forecast_core.lstm_step import LstmWeights
from forecast_core.network import build_network, copy_weights, reset_states
from forecast_core.scaling import MinMaxScaler
from forecast_core.session_step import SessionStep
from forecast_core.transform import Transform, TransformKind
from training.data import (
    NetworkSeries,
    contiguous_starts,
    layout_streams,
    network_series,
    window_length,
)
from training.trainer import TrainingResult, train_compiled

BATCH_SIZE = 3
UNITS = 6


def _values() -> np.ndarray:
    t = np.arange(90.0)
    return 5.0 + 0.1 * t + np.sin(t / 2.0) + np.random.default_rng(0).normal(0, 0.2, len(t))


@pytest.fixture(scope="module", params=list(TransformKind), ids=lambda kind: kind.value)
def trained(request: pytest.FixtureRequest) -> tuple[NetworkSeries, TrainingResult]:
    series = network_series(_values(), request.param)
    result = train_compiled(
        series, batch_size=BATCH_SIZE, units=UNITS, epochs=5, learning_rate=0.01, seed=2
    )
    return series, result


def _step(series: NetworkSeries, result: TrainingResult, shrink: float = 1.0) -> SessionStep:
    transform = Transform(series.kind, shrink if series.kind is TransformKind.DIFFERENCE else 1.0)
    return SessionStep(LstmWeights.from_list(list(result.weights)), transform, series.scaler)


def test_sessions_reproduce_the_batch_n_training_rows(trained) -> None:
    series, result = trained
    step = _step(series, result)
    values = _values()
    pairs = len(series.inputs)
    length = window_length(pairs, BATCH_SIZE)
    starts = contiguous_starts(pairs, BATCH_SIZE)
    model = build_network(BATCH_SIZE, UNITS, dtype="float64")
    copy_weights(result.weights, model)
    reset_states(model)
    outputs = np.stack(
        [
            model(batch, training=False).numpy()[:, 0]
            for batch in layout_streams(series.inputs, starts, length)
        ]
    )
    network_forecasts = series.scaler.unscale(outputs)  # (length, N): next value or difference
    lag = 1 if series.kind is TransformKind.DIFFERENCE else 0
    for row, start in enumerate(starts):
        # Network input k is value k (level) or value k+1 - value k (difference): a difference
        # session needs one value more, which only records it.
        raw = values[start : start + length + lag].tolist()
        _, forecasts = step.feed(step.zero_state(), raw)
        expected = network_forecasts[:, row]
        if lag:
            assert forecasts[0] == raw[0]
            expected = np.asarray(raw[1:]) + expected
        np.testing.assert_allclose(forecasts[lag:], expected, atol=1e-9, rtol=0)


def test_zero_shrink_is_exactly_persistence() -> None:
    rng = np.random.default_rng(9)
    arrays: list[npt.NDArray[np.floating]] = [
        rng.normal(size=(1, 4 * UNITS)),
        rng.normal(size=(UNITS, 4 * UNITS)),
        rng.normal(size=4 * UNITS),
        rng.normal(size=(UNITS, 1)),
        rng.normal(size=1),
    ]
    step = SessionStep(
        LstmWeights.from_list(arrays), Transform.difference(0.0), MinMaxScaler(-2.0, 3.0)
    )
    values = [3.25, -1.0e6, 0.1, 7.0, 7.0, 1e-300, 42.5]
    _, forecasts = step.feed(step.zero_state(), values)
    assert forecasts == values


def test_state_is_never_changed_in_place_and_feeding_in_parts_is_the_same(trained) -> None:
    series, result = trained
    step = _step(series, result, shrink=0.7)
    values = _values()[:12].tolist()
    state, first = step.feed(step.zero_state(), values[:5])
    kept = state.copy()
    _, rest = step.feed(state, values[5:])
    _, together = step.feed(step.zero_state(), values)
    assert first + rest == together
    np.testing.assert_array_equal(state, kept)
    assert not step.zero_state().flags.writeable


def test_difference_state_holds_the_last_value_nan_before_the_first(trained) -> None:
    series, result = trained
    step = _step(series, result)
    if series.kind is TransformKind.LEVEL:
        assert step.state_size == 2 * UNITS
        return
    assert step.state_size == 2 * UNITS + 1 and math.isnan(step.zero_state()[-1])
    state, (forecast,) = step.feed(step.zero_state(), [4.5])
    assert forecast == 4.5 and state[-1] == 4.5
    assert np.array_equal(state[:-1], np.zeros(2 * UNITS))  # the network was not stepped


def test_forecast_ahead_feeds_forecasts_back(trained) -> None:
    series, result = trained
    step = _step(series, result, shrink=0.5)
    state, forecasts = step.feed(step.zero_state(), _values()[:6].tolist())
    ahead = step.forecast_ahead(state, forecasts[-1], 3)
    state2, (second,) = step.feed(state, [forecasts[-1]])
    _, (third,) = step.feed(state2, [second])
    assert ahead == [forecasts[-1], second, third]
