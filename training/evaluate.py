"""Evaluation as a session sees it: the serving step fed the series one value at a time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast_core.arrays import FloatArray
from forecast_core.artifact import ErrorMetrics, Metrics
from forecast_core.session_step import SessionStep
from training.data import Split


@dataclass(frozen=True)
class Evaluation:
    forecasts: FloatArray  # forecasts[t] is the forecast of series[t + 1], raw units
    metrics: Metrics


def rmse(errors: FloatArray) -> float:
    return float(np.sqrt(np.mean(errors**2)))


def error_metrics(actual: FloatArray, forecast: FloatArray, previous: FloatArray) -> ErrorMetrics:
    """RMSE and MAE of the forecast next to the persistence forecast (next = last), and skill."""
    errors = forecast - actual
    naive = previous - actual
    model_rmse, naive_rmse = rmse(errors), rmse(naive)
    return ErrorMetrics(
        count=len(actual),
        rmse=model_rmse,
        mae=float(np.mean(np.abs(errors))),
        persistence_rmse=naive_rmse,
        persistence_mae=float(np.mean(np.abs(naive))),
        skill=1.0 - model_rmse / naive_rmse if naive_rmse > 0 else None,
    )


def part_metrics(series: FloatArray, forecasts: FloatArray, first: int, end: int) -> ErrorMetrics:
    """Scores of the forecasts of series[first:end] (forecasts[t] predicts series[t + 1])."""
    return error_metrics(
        series[first:end], forecasts[first - 1 : end - 1], series[first - 1 : end - 1]
    )


def evaluate(step: SessionStep, series: FloatArray, split: Split) -> Evaluation:
    """One session fed the whole series from a fresh state, scored per part."""
    forecasts = step.one_step_forecasts(series)
    train_end = split.train_length if split.in_sample else split.fit_length
    train = part_metrics(series, forecasts, 1, train_end) if train_end > 1 else None
    selection = part_metrics(series, forecasts, split.selection_start, split.train_length)
    validation = (
        part_metrics(series, forecasts, split.train_length, split.length)
        if split.train_length < split.length
        else None
    )
    return Evaluation(
        forecasts=forecasts,
        metrics=Metrics(train=train, selection=selection, validation=validation),
    )


def tutorial_table(series: FloatArray, forecasts: FloatArray) -> list[str]:
    """The tutorial's lines: ``>Expected=0.1, Predicted=0.1``."""
    return [
        f">Expected={expected:.1f}, Predicted={predicted:.1f}"
        for expected, predicted in zip(series[1:], forecasts, strict=True)
    ]
