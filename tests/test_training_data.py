"""Loading, checking and laying out the training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import NILE_CSV
from training.data import DataError, load_csv_series, prepare_training_data, tutorial_series


def test_tutorial_series_is_zero_to_point_nine() -> None:
    assert tutorial_series().values.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_rows_form_parallel_contiguous_streams() -> None:
    data = prepare_training_data(tutorial_series().values, batch_size=3, validation_fraction=0.0)
    scaled_inputs = data.scaler.unscale(data.inputs[:, :, 0, 0])
    # Batch b holds sample b of each stream; stream i is the contiguous run 3i, 3i+1, 3i+2.
    assert np.allclose(scaled_inputs, [[0.0, 0.3, 0.6], [0.1, 0.4, 0.7], [0.2, 0.5, 0.8]])
    targets = data.scaler.unscale(data.targets[:, :, 0])
    assert np.allclose(targets, scaled_inputs + 0.1)


def test_trims_leading_pairs_to_a_multiple_of_the_batch_size() -> None:
    data = prepare_training_data(np.arange(12.0), batch_size=4, validation_fraction=0.0)
    assert data.samples_trimmed == 3 and data.samples_used == 8
    first_batch = data.scaler.unscale(data.inputs[0, :, 0, 0])
    assert np.allclose(first_batch, [3.0, 5.0, 7.0, 9.0])


def test_scaling_uses_the_training_part_only() -> None:
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0, 200.0])
    data = prepare_training_data(values, batch_size=1, validation_fraction=0.2)
    assert data.train_length == 8
    assert (data.scaler.minimum, data.scaler.maximum) == (0.0, 7.0)


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
    with pytest.raises(DataError, match="batch size 5 needs at least 6 values"):
        prepare_training_data(np.arange(5.0), batch_size=5, validation_fraction=0.0)


def test_constant_series_is_refused() -> None:
    with pytest.raises(DataError, match="constant series"):
        prepare_training_data(np.ones(10), batch_size=2, validation_fraction=0.0)
