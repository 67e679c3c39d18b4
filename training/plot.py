"""The evaluation picture saved next to the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forecast_core.arrays import FloatArray
from training.data import Split


def save_evaluation_plot(
    path: Path,
    series: FloatArray,
    forecasts: FloatArray,
    split: Split,
    losses: FloatArray,
    best_epoch: int,
    title: str,
) -> None:
    """Whole series with forecasts; the validation tail (or the selection window when there is
    no tail) with forecasts and persistence; the training-loss curve."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 10), constrained_layout=True)
    steps = np.arange(len(series))
    top.plot(steps, series, marker=".", label="series")
    top.plot(steps[1:], forecasts, marker=".", label="one-step forecast (a session)")
    top.axvline(split.selection_start - 0.5, color="orange", linestyle=":", label="selection")
    if split.train_length < len(series):
        top.axvline(split.train_length - 0.5, color="grey", linestyle="--", label="validation")
    top.set_title(title)
    top.set_xlabel("t")
    top.legend()

    has_tail = split.train_length < len(series)
    first, end = (
        (split.train_length, len(series)) if has_tail else (split.selection_start, len(series))
    )
    window = np.arange(first, end)
    middle.plot(window, series[first:end], marker=".", label="actual")
    middle.plot(window, forecasts[first - 1 : end - 1], marker=".", label="forecast")
    middle.plot(window, series[first - 1 : end - 1], linestyle="--", label="persistence (last)")
    middle.set_title("validation tail" if has_tail else "selection window (no validation tail)")
    middle.set_xlabel("t")
    middle.legend()

    bottom.plot(np.arange(1, len(losses) + 1), losses)
    bottom.axvline(best_epoch, color="grey", linestyle="--", label="weights kept (early stopping)")
    bottom.legend()
    bottom.set_yscale("log")
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("training loss (MSE, scaled)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
