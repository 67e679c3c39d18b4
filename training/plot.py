"""The evaluation picture saved next to the artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from forecast_core.arrays import FloatArray
from forecast_core.artifact import ErrorMetrics
from training.data import Series, Split

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Tick labels on a time axis whose values are not numbers (dates): at most this many.
MAX_TIME_TICKS = 8


def save_evaluation_plot(
    path: Path,
    series: Series,
    forecasts: FloatArray,
    split: Split,
    losses: FloatArray,
    best_epoch: int,
    title: str,
    scores: ErrorMetrics | None,
) -> None:
    """Write the evaluation figure as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    figure = evaluation_figure(series, forecasts, split, losses, best_epoch, title, scores)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def evaluation_figure(
    series: Series,
    forecasts: FloatArray,
    split: Split,
    losses: FloatArray,
    best_epoch: int,
    title: str,
    scores: ErrorMetrics | None,
) -> Figure:
    """Whole series with forecasts; the validation tail (or the selection window when there is
    no tail) with forecasts, persistence and their RMSE; the training-loss curve.

    ``scores``: the one-step scores on that tail (or window).
    """
    import matplotlib.pyplot as plt

    values = series.values
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 10), constrained_layout=True)
    time = time_axis(series)
    x = time.x
    value_label = series.column or "value"

    top.plot(x, values, marker=".", label="actual")
    top.plot(x[1:], forecasts, marker=".", label="forecast of each value\nfrom the ones before")
    top.axvline(
        _between(x, split.selection_start),
        color="orange",
        linestyle=":",
        label="model selection\nwindow starts",
    )
    has_tail = split.train_length < len(values)
    if has_tail:
        top.axvline(
            _between(x, split.train_length),
            color="grey",
            linestyle="--",
            label="held-out validation\nstarts",
        )
    top.set_title(title)
    _label(top, time, value_label)

    first = split.train_length if has_tail else split.selection_start
    window = slice(first, len(values))
    before = slice(first - 1, len(values) - 1)
    middle.plot(x[window], values[window], marker=".", label="actual")
    middle.plot(x[window], forecasts[before], marker=".", label="forecast")
    middle.plot(x[window], values[before], linestyle="--", label="persistence:\nnext = last")
    part = "held-out validation" if has_tail else "selection window (no validation tail)"
    middle.set_title(f"{part}: {score_line(scores)}")
    _label(middle, time, value_label)

    bottom.plot(np.arange(1, len(losses) + 1), losses)
    bottom.axvline(best_epoch, color="grey", linestyle="--", label="weights kept (early stopping)")
    bottom.legend()
    bottom.set_yscale("log")
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("training loss (MSE, scaled)")
    return figure


def score_line(scores: ErrorMetrics | None) -> str:
    """RMSE of the forecasts against persistence's, as the chart states it."""
    if scores is None:
        return "no scores"
    skill = "" if scores.skill is None else f", skill {scores.skill:+.2f}"
    return (
        f"RMSE {scores.rmse:.4g} against persistence {scores.persistence_rmse:.4g}{skill} "
        f"({scores.count} forecasts)"
    )


@dataclass(frozen=True)
class TimeAxis:
    """Where each value goes on the time axis, its name, and tick labels for time stamps that are
    not numbers (dates: placed at their rows)."""

    x: FloatArray
    label: str
    ticks: tuple[list[int], list[str]] | None = None


def time_axis(series: Series) -> TimeAxis:
    """The CSV's time column when it has one (its numbers, or its stamps as labels); else rows."""
    rows = np.arange(len(series.values), dtype=np.float64)
    if not series.times or series.time_column is None:
        return TimeAxis(rows, "row")
    try:
        return TimeAxis(np.asarray([float(t) for t in series.times]), series.time_column)
    except ValueError:
        marks = np.linspace(0, len(series.times) - 1, min(MAX_TIME_TICKS, len(series.times)))
        positions = sorted({int(round(mark)) for mark in marks})
        labels = [series.times[position] for position in positions]
        return TimeAxis(rows, series.time_column, (positions, labels))


def _between(x: FloatArray, position: int) -> float:
    """Where a boundary before ``position`` is drawn: halfway from the value before it."""
    if position <= 0:
        return float(x[0])
    return float((x[position - 1] + x[position]) / 2)


def _label(axes: Axes, time: TimeAxis, value_label: str) -> None:
    axes.set_xlabel(time.label)
    axes.set_ylabel(value_label)
    if time.ticks is not None:
        axes.set_xticks(*time.ticks, rotation=30)
    elif np.all(time.x == np.round(time.x)):
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # years and rows, not 1952.5
    # Outside the plot, on the right: a legend inside covers data.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
