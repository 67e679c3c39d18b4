"""The evaluation picture saved next to the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def save_evaluation_plot(
    path: Path,
    series: FloatArray,
    forecasts: FloatArray,
    train_length: int,
    losses: FloatArray,
    title: str,
) -> None:
    """Series, one-step forecasts, validation boundary, and the training-loss curve."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), constrained_layout=True)
    steps = np.arange(len(series))
    top.plot(steps, series, marker=".", label="series")
    top.plot(steps[1:], forecasts, marker=".", label="one-step forecast (batch-1 copy)")
    if train_length < len(series):
        top.axvline(train_length - 0.5, color="grey", linestyle="--", label="validation starts")
    top.set_title(title)
    top.set_xlabel("t")
    top.legend()
    bottom.plot(np.arange(1, len(losses) + 1), losses)
    bottom.set_yscale("log")
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("training loss (MSE, scaled)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
