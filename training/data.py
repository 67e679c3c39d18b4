"""Loading, checking, scaling and laying out the series for stateful batch-N training."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from forecast_core.scaling import MinMaxScaler

FloatArray = npt.NDArray[np.float64]

# The tutorial's sequence: 0.0, 0.1, ..., 0.9.
TUTORIAL_SOURCE = "tutorial"


class DataError(ValueError):
    """Input data the job cannot train on; the message says what to fix."""


@dataclass(frozen=True)
class Series:
    """A univariate series with where it came from."""

    values: FloatArray
    source: str
    column: str | None
    sha256: str


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
    chosen = column if column is not None else header[-1]
    if chosen not in header:
        raise DataError(f"column {chosen!r} not in {path}; its columns are {', '.join(header)}")
    index = header.index(chosen)
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
    )


@dataclass(frozen=True)
class TrainingData:
    """Scaled training pairs laid out as N parallel contiguous streams."""

    inputs: FloatArray  # (batches, N, 1, 1): row i of batch b+1 continues row i of batch b
    targets: FloatArray  # (batches, N, 1)
    scaler: MinMaxScaler
    train_length: int  # values in the training part (the rest is validation)
    samples_used: int
    samples_trimmed: int


def split_length(length: int, validation_fraction: float) -> int:
    """How many leading values form the training part."""
    return length - int(round(length * validation_fraction))


def prepare_training_data(
    series: FloatArray, batch_size: int, validation_fraction: float
) -> TrainingData:
    """Frame t -> t+1 on the training part, scale it, and lay it out as batch_size streams."""
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"--validation-fraction must be in [0, 1), got {validation_fraction}")
    train_length = split_length(len(series), validation_fraction)
    if validation_fraction > 0 and train_length == len(series):
        raise DataError(
            f"--validation-fraction {validation_fraction} leaves no validation values "
            f"in a series of {len(series)}"
        )
    samples = train_length - 1
    if samples < batch_size:
        raise DataError(
            f"the training part has {train_length} values, {samples} input/target pairs; "
            f"batch size {batch_size} needs at least {batch_size + 1} values"
        )
    train = series[:train_length]
    try:
        scaler = MinMaxScaler.fit(train)
    except ValueError as error:
        raise DataError(str(error)) from None
    scaled = scaler.scale(train)
    # Trim from the start, so the streams end at the newest data the model is served after.
    trimmed = samples % batch_size
    x = scaled[trimmed:-1]
    y = scaled[trimmed + 1 :]
    stream_length = len(x) // batch_size
    # Stream i is the contiguous run x[i*L : (i+1)*L]; batch b holds sample b of every stream.
    inputs = x.reshape(batch_size, stream_length).T.reshape(stream_length, batch_size, 1, 1)
    targets = y.reshape(batch_size, stream_length).T.reshape(stream_length, batch_size, 1)
    return TrainingData(
        inputs=np.ascontiguousarray(inputs),
        targets=np.ascontiguousarray(targets),
        scaler=scaler,
        train_length=train_length,
        samples_used=len(x),
        samples_trimmed=trimmed,
    )
