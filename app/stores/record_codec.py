"""The binary form of a session record, for the durable and shared stores.

Layout (little-endian), format 4: a fixed header (format, step, revision, created, last used,
length of the model version, number of state floats, number of values in the last request,
number of tracking floats, interval offsets per value, rows and columns of the history window),
the model version in UTF-8, then float64s: the state, the last request's values, its
predictions, the tracking array, the last request's offsets, the history window's values and
forecasts (row by row); then float32s: the window's interval radii (row by row; they are float32
values already, app.session_history); then one uint32 per last value: the interval levels it
missed.

Format 5 is format 4 without the window's rows: a store that keeps the window apart from the
record (app.window_ring, the Redis stores) hands them to ``decode_record`` as a ring.

Format 4's first cut (merged before the radii became float32) wrote the window as float64 rows
of value, forecast and radii; such records are told apart by their length and still read.

Earlier formats are still read, so records written before an upgrade keep serving: format 3
has no history window (a model change then restarts the session from zero state), format 2
also ends after the predictions (no tracking: the session's tracking starts afresh), and
format 1 also counted LSTM units instead of state floats (state = 2 * units).
"""

from __future__ import annotations

import functools
import logging
import struct

import numpy as np

from app.session_history import Window, as_array
from app.session_rules import SessionRecord
from app.window_ring import RingWindow
from forecast_core.arrays import FloatArray

FORMAT = 4
FORMAT_WINDOW_APART = 5
_HEADER = struct.Struct("<BqqddHHHIIIH")
_HEADER_BEFORE_HISTORY = struct.Struct("<BqqddHHHII")
_HEADER_BEFORE_TRACKING = struct.Struct("<BqqddHHH")
_FORMAT_COUNTING_UNITS = 1
_FORMAT_WITHOUT_TRACKING = 2
_FORMAT_WITHOUT_HISTORY = 3


logger = logging.getLogger(__name__)
# Format, step, revision, created and last used: the same first bytes in every format.
_PREFIX = struct.Struct("<Bqqdd")


class RecordFormatError(ValueError):
    """Bytes that are not a session record this code can read."""


def ring_window_shape(data: bytes) -> tuple[int, int] | None:
    """The rows and columns of the window a format 5 record keeps apart, in a ring; None for a
    record without a window or with its window inline (its ring does not matter)."""
    if len(data) < _HEADER.size or data[0] != FORMAT_WINDOW_APART:
        return None
    header = _HEADER.unpack_from(data)
    rows, columns = header[10], header[11]
    return (rows, columns) if rows else None


def decode_stored_record(data: bytes, ring: bytes | None = None) -> SessionRecord:
    """What a store read: the record, or, for bytes this code cannot read (a newer format, or
    damage), a session that restarts from zero state at its step, as after a model change, and
    says so (``previous_model_version`` names the problem). Never an error for the client.
    ``ring``: the window kept apart from a format 5 record (None: the record without it)."""
    try:
        return decode_record(data, ring)
    except RecordFormatError as error:
        prefix = _PREFIX.unpack_from(data) if len(data) >= _PREFIX.size else (0, 0, 0, 0.0, 0.0)
        fmt, step, revision, created, used = prefix
        logger.warning("session record unreadable (%s); the session restarts its state", error)
        return SessionRecord(
            state=np.zeros(0),
            step=max(step, 0),
            revision=revision,
            model_version=f"unreadable record (format {fmt})",
            created_at=created,
            last_used_at=used,
        )


# Stored floats are little-endian float64: arrays already of this type are written as they are.
_FLOAT64 = np.dtype("<f8")


@functools.lru_cache(maxsize=64)
def _doubles(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}d")


@functools.lru_cache(maxsize=64)
def _uints(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


@functools.lru_cache(maxsize=16)
def _utf8(text: str) -> bytes:
    """A model version's bytes (a few versions are written again and again)."""
    return text.encode()


def _float64_bytes(values: FloatArray) -> bytes:
    array = np.asarray(values)
    return (array if array.dtype == _FLOAT64 else array.astype(_FLOAT64)).tobytes()


def encode_record(record: SessionRecord, *, window_apart: bool = False) -> bytes:
    """Compact binary form of ``record``; ``window_apart``: format 5, without the window's rows
    (the store keeps them as a ring: app.window_ring)."""
    (
        state, step, revision, model_version, created, used, values, predictions, tracking,
        offsets, misses, history,
    ) = record  # fmt: skip
    version = _utf8(model_version)
    count = len(values)
    rows, columns = (0, 0) if history is None else history.shape
    parts = [
        _HEADER.pack(
            FORMAT_WINDOW_APART if window_apart else FORMAT,
            step,
            revision,
            created,
            used,
            len(version),
            len(state),
            count,
            0 if tracking is None else len(tracking),
            len(offsets) // count if count else 0,
            rows,
            columns,
        ),
        version,
        _float64_bytes(state),
        # struct, not numpy, for the short tuples: cheaper per request.
        _doubles(2 * count).pack(*values, *predictions),
    ]
    if tracking is not None:
        parts.append(_float64_bytes(tracking))
    parts.append(_doubles(len(offsets)).pack(*offsets))
    rows_array = as_array(history) if rows and not window_apart else None
    if rows_array is not None:
        parts.append(np.ascontiguousarray(rows_array[:, :2], dtype="<f8").tobytes())
        if columns > 2:
            parts.append(np.ascontiguousarray(rows_array[:, 2:], dtype="<f4").tobytes())
    if len(misses) != count:
        misses = (0,) * count
    parts.append(_uints(count).pack(*misses))
    return b"".join(parts)


# The header's fields, in _HEADER's order, and numpy's type of each of its struct codes.
_HEADER_FIELDS = (
    "format", "step", "revision", "created", "used", "version_size", "state_size", "values",
    "tracking_size", "per_value", "rows", "columns",
)  # fmt: skip
_NUMPY_OF_STRUCT = {"B": "u1", "q": "<i8", "d": "<f8", "H": "<u2", "I": "<u4"}


@functools.lru_cache(maxsize=16)
def one_value_records_type(
    version_size: int, state_size: int, tracking_size: int, per_value: int
) -> np.dtype[np.void]:
    """The layout of a format 5 record of one value (what :func:`encode_record` writes for a
    record whose last request had one value and whose window is kept apart), as a numpy type:
    an array of it encodes many such records at once. Its fields: the header's (``format`` to
    ``columns``), then ``version``, ``state``, ``value``, ``prediction``, ``tracking``,
    ``offsets`` and ``missed``."""
    header = [
        (name, _NUMPY_OF_STRUCT[code])
        for name, code in zip(_HEADER_FIELDS, _HEADER.format.lstrip("<"), strict=True)
    ]
    kind = np.dtype(
        [
            *header,
            ("version", f"S{version_size}"),
            ("state", "<f8", (state_size,)),
            ("value", "<f8"),
            ("prediction", "<f8"),
            ("tracking", "<f8", (tracking_size,)),
            ("offsets", "<f8", (per_value,)),
            ("missed", "<u4"),
        ]
    )
    assert (
        kind.itemsize
        == _HEADER.size + version_size + 8 * (state_size + 2 + tracking_size + per_value) + 4
    )
    return kind


def decode_record(data: bytes, ring: bytes | None = None) -> SessionRecord:
    """The record ``data`` holds; RecordFormatError if it is not one. ``ring``: the window of a
    format 5 record (None: such a record is read without its window)."""
    if len(data) < _HEADER_BEFORE_TRACKING.size:
        raise RecordFormatError("truncated session record")
    fmt = data[0]
    if fmt in (FORMAT, FORMAT_WINDOW_APART):
        if len(data) < _HEADER.size:
            raise RecordFormatError("truncated session record")
        header = _HEADER.unpack_from(data)
        tracking_size, per_value, rows, columns = header[8:12]
        offset = _HEADER.size
    elif fmt == _FORMAT_WITHOUT_HISTORY:
        if len(data) < _HEADER_BEFORE_HISTORY.size:
            raise RecordFormatError("truncated session record")
        header = _HEADER_BEFORE_HISTORY.unpack_from(data)
        tracking_size, per_value = header[8], header[9]
        rows = columns = 0
        offset = _HEADER_BEFORE_HISTORY.size
    elif fmt in (_FORMAT_COUNTING_UNITS, _FORMAT_WITHOUT_TRACKING):
        header = _HEADER_BEFORE_TRACKING.unpack_from(data)
        tracking_size = per_value = rows = columns = 0
        offset = _HEADER_BEFORE_TRACKING.size
    else:
        raise RecordFormatError(f"unknown session record format {fmt}")
    _, step, revision, created, used, version_len, state_size, count = header[:8]
    if fmt == _FORMAT_COUNTING_UNITS:
        state_size *= 2
    offsets_end = state_size + 2 * count + tracking_size + per_value * count
    inline = fmt != FORMAT_WINDOW_APART
    floats = offsets_end + 2 * rows if columns and inline else offsets_end
    radii = rows * (columns - 2) if columns > 2 and inline else 0
    misses_size = 4 * count if fmt >= _FORMAT_WITHOUT_HISTORY else 0
    if (rows > 0) != (columns >= 2):
        raise RecordFormatError(f"a history window of {rows} rows and {columns} columns")
    # Radii as float32; records written by this format's first cut kept them as float64.
    radius_size = 4
    if len(data) != offset + version_len + 8 * floats + 4 * radii + misses_size:
        if not radii or len(data) != offset + version_len + 8 * (floats + radii) + misses_size:
            raise RecordFormatError("truncated session record")
        radius_size = 8
    version = data[offset : offset + version_len].decode()
    offset += version_len
    numbers = np.frombuffer(data, dtype="<f8", offset=offset, count=floats).astype(np.float64)
    cursor = state_size + 2 * count
    tracking = numbers[cursor : cursor + tracking_size] if tracking_size else None
    cursor += tracking_size
    misses_at = offset + 8 * floats + radius_size * radii
    misses = struct.unpack_from(f"<{count}I", data, misses_at) if misses_size else ()
    history: Window | None = None
    if rows and not inline:
        if ring is not None:
            try:
                history = RingWindow.read(ring, rows, columns, step)
            except ValueError as error:
                raise RecordFormatError(str(error)) from None
    elif rows:
        history_at = offset + 8 * offsets_end
        inline_rows = np.empty((rows, columns))
        if radius_size == 4:
            inline_rows[:, :2] = np.frombuffer(data, "<f8", 2 * rows, history_at).reshape(rows, 2)
            if radii:
                stored = np.frombuffer(data, "<f4", radii, history_at + 16 * rows)
                inline_rows[:, 2:] = stored.reshape(rows, columns - 2)
        else:  # the first cut: float64 rows of value, forecast and radii
            stored = np.frombuffer(data, "<f8", rows * columns, history_at).reshape(rows, columns)
            inline_rows[:, :2] = stored[:, :2]
            inline_rows[:, 2:] = stored[:, 2:].astype(np.float32)
        history = inline_rows
    return SessionRecord(
        state=numbers[:state_size],
        step=step,
        revision=revision,
        model_version=version,
        created_at=created,
        last_used_at=used,
        last_values=tuple(numbers[state_size : state_size + count].tolist()),
        last_predictions=tuple(numbers[state_size + count : state_size + 2 * count].tolist()),
        tracking=tracking,
        last_offsets=tuple(numbers[cursor:offsets_end].tolist()),
        last_misses=tuple(misses),
        history=history,
    )
