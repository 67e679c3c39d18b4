"""Loading, checking and laying out the training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecast_core.transform import TransformKind
from tests.conftest import NILE_CSV
from training.data import (
    DataError,
    contiguous_starts,
    layout_streams,
    load_csv_series,
    network_series,
    split_series,
    tutorial_series,
)


def test_tutorial_series_is_zero_to_point_nine() -> None:
    assert tutorial_series().values.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_rows_form_parallel_contiguous_streams() -> None:
    series = network_series(tutorial_series().values, TransformKind.LEVEL)
    starts = contiguous_starts(len(series.inputs), 3)
    inputs = series.scaler.unscale(layout_streams(series.inputs, starts, 3)[:, :, 0, 0])
    # Batch b holds sample b of each stream; stream i is the contiguous run 3i, 3i+1, 3i+2.
    assert np.allclose(inputs, [[0.0, 0.3, 0.6], [0.1, 0.4, 0.7], [0.2, 0.5, 0.8]])
    targets = series.scaler.unscale(layout_streams(series.targets, starts, 3)[:, :, 0, 0])
    assert np.allclose(targets, inputs + 0.1)


def test_contiguous_layout_trims_leading_pairs_to_a_multiple_of_the_batch_size() -> None:
    assert contiguous_starts(11, 4).tolist() == [3, 5, 7, 9]


def test_difference_series_sees_the_differences_scaled_on_the_fit_part() -> None:
    values = np.array([0.0, 1.0, 3.0, 6.0, 10.0, 100.0])
    series = network_series(values[:5], TransformKind.DIFFERENCE)
    assert (series.scaler.minimum, series.scaler.maximum) == (1.0, 4.0)
    assert np.allclose(series.scaler.unscale(series.inputs), [1.0, 2.0, 3.0])
    assert np.allclose(series.scaler.unscale(series.targets), [2.0, 3.0, 4.0])


def test_constant_differences_are_widened_not_refused() -> None:
    series = network_series(tutorial_series().values, TransformKind.DIFFERENCE)
    assert series.scaler.minimum == pytest.approx(0.0) and series.scaler.maximum == pytest.approx(
        0.2
    )
    assert np.allclose(series.inputs, 0.5)


def test_selection_window_is_cut_from_the_end_of_the_training_part() -> None:
    split = split_series(1000, 0.2, 0.2, batch_size=3, min_fit_values=5, min_selection_values=10)
    assert (split.train_length, split.fit_length, split.selection_start) == (800, 640, 640)
    assert not split.in_sample


def test_a_window_too_short_to_choose_on_means_in_sample_selection() -> None:
    split = split_series(10, 0.0, 0.2, batch_size=3, min_fit_values=5, min_selection_values=10)
    assert (split.train_length, split.fit_length, split.selection_start) == (10, 10, 1)
    assert split.in_sample


def test_reads_a_named_column() -> None:
    series = load_csv_series(NILE_CSV, "volume")
    assert len(series.values) == 100 and series.values[0] == 1120.0
    assert load_csv_series(NILE_CSV, None).column == "volume"


@pytest.mark.parametrize(
    ("content", "column", "message"),
    [
        ("", None, "is empty"),
        ("a,b\n", None, "no data rows"),
        ("a,b\n1,2\n", "c", "column 'c' not in"),
        ("a\n1\nx\n", None, "line 3: column 'a' holds 'x', not a number"),
        ("a\n1\nnan\n", None, "line 3: column 'a' holds 'nan'"),
        ("a\n1\n-inf\n", None, "line 3: column 'a' holds '-inf'"),
    ],
    ids=["empty", "header-only", "unknown-column", "non-numeric", "nan", "infinite"],
)
def test_bad_csv_is_refused_with_a_clear_message(
    tmp_path: Path, content: str, column: str | None, message: str
) -> None:
    path = tmp_path / "series.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_csv_series(path, column)


def test_missing_csv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_csv_series(tmp_path / "nope.csv", None)


def test_series_too_short_for_the_batch_size_is_refused() -> None:
    with pytest.raises(DataError, match="batch size 5 needs at least 6 values to train on"):
        split_series(5, 0.0, 0.2, batch_size=5, min_fit_values=6, min_selection_values=10)


@pytest.mark.parametrize("kind", list(TransformKind), ids=lambda kind: kind.value)
def test_constant_series_is_refused(kind: TransformKind) -> None:
    with pytest.raises(DataError, match="constant series"):
        network_series(np.ones(10), kind)
