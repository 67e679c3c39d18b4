"""Evaluation as the tutorial did it: a batch-1 copy fed the series one value at a time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forecast_core.artifact import ErrorMetrics, Metrics
from forecast_core.network import build_network, copy_weights, reset_states
from forecast_core.scaling import MinMaxScaler

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Evaluation:
    forecasts: FloatArray  # forecasts[t] is the forecast of series[t + 1], raw units
    metrics: Metrics


def one_step_forecasts(
    weights: list[npt.NDArray[np.float32]], units: int, scaler: MinMaxScaler, series: FloatArray
) -> FloatArray:
    """Rebuild with batch size 1, copy the weights, feed series[:-1] from a fresh state."""
    import tensorflow as tf

    model = build_network(1, units)
    copy_weights(weights, model)
    reset_states(model)
    step = tf.function(lambda x: model(x, training=False))
    scaled = scaler.scale(series[:-1]).astype(np.float32)
    outputs = [float(step(tf.constant(v, shape=(1, 1, 1)))[0, 0]) for v in scaled]
    return np.asarray(scaler.unscale(np.asarray(outputs, dtype=np.float64)))


def error_metrics(actual: FloatArray, forecast: FloatArray, previous: FloatArray) -> ErrorMetrics:
    """RMSE and MAE of the forecast next to the persistence forecast (next = last)."""
    errors = forecast - actual
    naive = previous - actual
    return ErrorMetrics(
        count=len(actual),
        rmse=float(np.sqrt(np.mean(errors**2))),
        mae=float(np.mean(np.abs(errors))),
        persistence_rmse=float(np.sqrt(np.mean(naive**2))),
        persistence_mae=float(np.mean(np.abs(naive))),
    )


def evaluate(
    weights: list[npt.NDArray[np.float32]],
    units: int,
    scaler: MinMaxScaler,
    series: FloatArray,
    train_length: int,
) -> Evaluation:
    """One-step forecasts over the whole series, state carried from its start, scored per part."""
    forecasts = one_step_forecasts(weights, units, scaler, series)
    actual, previous = series[1:], series[:-1]
    # forecasts[t] predicts series[t + 1]; targets before train_length belong to training.
    boundary = train_length - 1
    train = error_metrics(actual[:boundary], forecasts[:boundary], previous[:boundary])
    validation = (
        error_metrics(actual[boundary:], forecasts[boundary:], previous[boundary:])
        if boundary < len(actual)
        else None
    )
    return Evaluation(forecasts=forecasts, metrics=Metrics(train=train, validation=validation))


def tutorial_table(series: FloatArray, forecasts: FloatArray) -> list[str]:
    """The tutorial's lines: ``>Expected=0.1, Predicted=0.1``."""
    return [
        f">Expected={expected:.1f}, Predicted={predicted:.1f}"
        for expected, predicted in zip(series[1:], forecasts, strict=True)
    ]
