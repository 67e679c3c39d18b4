"""Loading, checking, scaling and laying out the series for stateful batch-N training."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from forecast_core.arrays import FloatArray
from forecast_core.scaling import MinMaxScaler
from forecast_core.transform import TransformKind

# The tutorial's sequence: 0.0, 0.1, ..., 0.9.
TUTORIAL_SOURCE = "tutorial"
# Names a CSV's time column goes by (any case); its values label the evaluation plot's time axis.
TIME_COLUMN_NAMES = frozenset(
    {"time", "date", "datetime", "timestamp", "year", "month", "week", "day", "period", "ds", "t"}
)


class DataError(ValueError):
    """Input data the job cannot train on; the message says what to fix."""


@dataclass(frozen=True)
class Series:
    """A univariate series with where it came from."""

    values: FloatArray
    source: str
    column: str | None
    sha256: str
    time_column: str | None = None
    times: tuple[str, ...] = ()  # one per value, from time_column


def tutorial_series() -> Series:
    """The tutorial's sequence 0.0 ... 0.9."""
    values = np.round(np.arange(10) / 10.0, 10)
    digest = hashlib.sha256(values.astype("<f8").tobytes()).hexdigest()
    return Series(values=values, source=TUTORIAL_SOURCE, column=None, sha256=digest)


def load_csv_series(path: Path, column: str | None) -> Series:
    """Read one numeric column (default: the last) from a CSV with a header row."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"data path {path} is a folder, not a CSV file") from None
    except OSError as error:
        raise DataError(f"cannot read data file {path}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"data file {path} is not UTF-8 text") from None
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"data file {path} is empty")
    header = [name.strip() for name in rows[0]]
    if all(_is_number(name) for name in header):
        # Read as a header, this row's numbers would name the columns and leave the series.
        raise DataError(
            f"{path} has no header row: its first line ({','.join(header)}) is numbers; add a "
            f"first line naming the columns (for example 'value', or 'year,value')"
        )
    chosen = column if column is not None else header[-1]
    if chosen not in header:
        raise DataError(f"column {chosen!r} not in {path}; its columns are {', '.join(header)}")
    index = header.index(chosen)
    time_index = next(
        (i for i, name in enumerate(header) if i != index and name.lower() in TIME_COLUMN_NAMES),
        None,
    )
    values: list[float] = []
    for line_number, row in enumerate(rows[1:], start=2):
        cell = row[index].strip() if index < len(row) else ""
        try:
            value = float(cell)
        except ValueError:
            raise DataError(
                f"{path} line {line_number}: column {chosen!r} holds {cell!r}, not a number"
            ) from None
        if not math.isfinite(value):
            raise DataError(f"{path} line {line_number}: column {chosen!r} holds {cell!r}")
        values.append(value)
    if not values:
        raise DataError(f"data file {path} has a header but no data rows")
    return Series(
        values=np.asarray(values, dtype=np.float64),
        source=str(path),
        column=chosen,
        sha256=hashlib.sha256(raw).hexdigest(),
        time_column=None if time_index is None else header[time_index],
        times=()
        if time_index is None
        else tuple(row[time_index].strip() if time_index < len(row) else "" for row in rows[1:]),
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def split_length(length: int, validation_fraction: float) -> int:
    """How many leading values form the training part."""
    return length - int(round(length * validation_fraction))


@dataclass(frozen=True)
class Split:
    """Training part, selection window and validation tail of a series.

    The network trains on ``values[:fit_length]``. Every choice is scored on the forecasts of
    ``values[selection_start:train_length]`` by a session fed the series from its start. The
    validation tail ``values[train_length:]`` is only reported.
    """

    length: int
    train_length: int
    fit_length: int
    selection_start: int
    in_sample: bool  # no held-out selection window: scored on the training part itself


def split_series(
    length: int,
    validation_fraction: float,
    selection_fraction: float,
    *,
    batch_size: int,
    min_fit_values: int,
    min_selection_values: int,
) -> Split:
    """Cut the validation tail, then the selection window from the end of the training part.

    A window shorter than ``min_selection_values`` says nothing reliable about a choice; then
    (a tiny series, or ``selection_fraction`` 0) choices are scored on the training part itself.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"--validation-fraction must be in [0, 1), got {validation_fraction}")
    if not 0.0 <= selection_fraction < 1.0:
        raise DataError(f"--selection-fraction must be in [0, 1), got {selection_fraction}")
    train_length = split_length(length, validation_fraction)
    if validation_fraction > 0 and train_length == length:
        raise DataError(
            f"--validation-fraction {validation_fraction} leaves no validation values "
            f"in a series of {length}"
        )
    selection_length = int(round(train_length * selection_fraction))
    held_out = selection_length >= min_selection_values
    fit_length = train_length - selection_length if held_out else train_length
    if fit_length < min_fit_values:
        raise DataError(
            f"batch size {batch_size} needs at least {min_fit_values} values to train on; "
            f"the training part leaves {fit_length}"
        )
    return Split(
        length=length,
        train_length=train_length,
        fit_length=fit_length,
        selection_start=fit_length if held_out else 1,
        in_sample=not held_out,
    )


@dataclass(frozen=True)
class NetworkSeries:
    """What the network sees for one transform: scaled inputs and next-step targets."""

    kind: TransformKind
    scaler: MinMaxScaler
    inputs: FloatArray  # scaled input at step t
    targets: FloatArray  # scaled input at step t + 1


def network_values(values: FloatArray, kind: TransformKind) -> FloatArray:
    """The raw series the network is fed: the values, or their first differences."""
    return np.diff(values) if kind is TransformKind.DIFFERENCE else values


def min_fit_values(kind: TransformKind, batch_size: int) -> int:
    """Values needed for one training pair per stream (a difference costs one value)."""
    return batch_size + (2 if kind is TransformKind.DIFFERENCE else 1)


def network_series(values: FloatArray, kind: TransformKind) -> NetworkSeries:
    """Scale the transformed training values (fitted on them only) and frame t -> t+1."""
    seen = network_values(values, kind)
    try:
        scaler = MinMaxScaler.fit(seen, widen_constant=kind is TransformKind.DIFFERENCE)
    except ValueError as error:
        raise DataError(str(error)) from None
    scaled = np.asarray(scaler.scale(seen), dtype=np.float64)
    return NetworkSeries(kind=kind, scaler=scaler, inputs=scaled[:-1], targets=scaled[1:])


def window_length(pairs: int, batch_size: int) -> int:
    """Length of each of the N training streams: N of them cover the pairs once."""
    return pairs // batch_size


def contiguous_starts(pairs: int, batch_size: int) -> npt.NDArray[np.int64]:
    """Start of each stream in the fixed layout: N contiguous runs ending at the newest pair.

    Leading pairs that do not fill a multiple of N are left out, so the streams end at the
    newest data the model is served after.
    """
    length = window_length(pairs, batch_size)
    trimmed = pairs - length * batch_size
    return trimmed + length * np.arange(batch_size, dtype=np.int64)


def layout_streams(series: FloatArray, starts: npt.NDArray[np.int64], length: int) -> FloatArray:
    """(length, N, 1, 1): batch b holds step b of each stream, row i continues row i."""
    index = starts[None, :] + np.arange(length)[:, None]
    return np.ascontiguousarray(series[index][:, :, None, None])
