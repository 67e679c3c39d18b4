"""A CSV without a header row is refused; the evaluation PNG says what it shows: the value and
time columns on its axes, a legend beside the data, the held-out RMSE against persistence."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from forecast_core.artifact import ErrorMetrics
from tests.conftest import NILE_CSV
from training.cli import main
from training.data import DataError, Series, load_csv_series, split_series

NO_HEADER = "no header row: its first line (1871,1120.0) is numbers; add a first line naming"


@pytest.fixture
def headerless_csv(tmp_path: Path) -> Path:
    csv = tmp_path / "headerless.csv"
    csv.write_text("".join(NILE_CSV.read_text().splitlines(keepends=True)[1:]))
    return csv


def test_a_csv_whose_first_line_is_numbers_is_refused(headerless_csv: Path) -> None:
    with pytest.raises(DataError, match=re.escape(NO_HEADER)):
        load_csv_series(headerless_csv, None)


def test_training_on_a_csv_without_header_exits_2_with_one_line(
    headerless_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    assert main(["--data", str(headerless_csv), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and NO_HEADER in error
    assert not out.exists()


def test_the_csv_time_column_comes_along() -> None:
    series = load_csv_series(NILE_CSV, "volume")
    assert (series.time_column, series.times[:2]) == ("year", ("1871", "1872"))


def _nile_figure(scores: ErrorMetrics | None) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from training.plot import evaluation_figure

    series: Series = load_csv_series(NILE_CSV, "volume")
    split = split_series(
        len(series.values), 0.2, 0.25, batch_size=3, min_fit_values=4, min_selection_values=10
    )
    forecasts = series.values[:-1]  # persistence stands in for the model's forecasts
    losses = np.linspace(1.0, 0.1, 20)
    return evaluation_figure(series, forecasts, split, losses, 12, "Nile", scores)


def test_plot_axes_are_the_csv_columns() -> None:
    figure = _nile_figure(None)
    top = figure.axes[0]
    assert (top.get_xlabel(), top.get_ylabel()) == ("year", "volume")
    assert np.asarray(top.lines[0].get_xdata())[0] == 1871


def test_plot_legends_sit_beside_the_data() -> None:
    figure = _nile_figure(None)
    figure.canvas.draw()
    for axes in figure.axes[:2]:
        legend = axes.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= axes.get_window_extent().x1
        assert not any("batch-1" in text.get_text() for text in legend.get_texts())


def test_plot_states_the_validation_rmse_against_persistence() -> None:
    scores = ErrorMetrics(
        count=20, rmse=125.0, mae=100.0, persistence_rmse=153.0, persistence_mae=120.0, skill=0.183
    )
    title = _nile_figure(scores).axes[1].get_title()
    assert title == (
        "held-out validation: RMSE 125 against persistence 153, skill +0.18 (20 forecasts)"
    )


def test_training_prints_the_plots_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--epochs", "50"]) == 0
    latest = (tmp_path / "latest").resolve()
    assert f"; evaluation plot: {latest / 'evaluation.png'}\n" in capsys.readouterr().out
