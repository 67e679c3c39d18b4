"""The binary form of a session record, for the durable and shared stores.

Layout (little-endian): a fixed header (format, step, revision, created, last used, length of the
model version, number of state floats, number of values in the last request), the model version
in UTF-8, the state floats, then the last request's values and its predictions.

Format 1 counted LSTM units instead of state floats (state = 2 * units); it is still read, so
records written before format 2 keep serving.
"""

from __future__ import annotations

import struct

import numpy as np

from app.session_rules import SessionRecord

_HEADER = struct.Struct("<BqqddHHH")
FORMAT = 2
_FORMAT_COUNTING_UNITS = 1


class RecordFormatError(ValueError):
    """Bytes that are not a session record this code can read."""


def encode_record(record: SessionRecord) -> bytes:
    """Compact binary form of ``record``."""
    version = record.model_version.encode()
    count = len(record.last_values)
    return b"".join(
        (
            _HEADER.pack(
                FORMAT,
                record.step,
                record.revision,
                record.created_at,
                record.last_used_at,
                len(version),
                len(record.state),
                count,
            ),
            version,
            np.asarray(record.state, dtype="<f8").tobytes(),
            # struct, not numpy, for the short tuples: cheaper per request.
            struct.pack(f"<{2 * count}d", *record.last_values, *record.last_predictions),
        )
    )


def decode_record(data: bytes) -> SessionRecord:
    """The record ``data`` holds; RecordFormatError if it is not one."""
    if len(data) < _HEADER.size:
        raise RecordFormatError("truncated session record")
    fmt, step, revision, created, used, version_len, state_size, count = _HEADER.unpack_from(data)
    if fmt == _FORMAT_COUNTING_UNITS:
        state_size *= 2
    elif fmt != FORMAT:
        raise RecordFormatError(f"unknown session record format {fmt}")
    offset = _HEADER.size
    if len(data) != offset + version_len + 8 * (state_size + 2 * count):
        raise RecordFormatError("truncated session record")
    version = data[offset : offset + version_len].decode()
    offset += version_len
    floats = np.frombuffer(data, dtype="<f8", offset=offset).astype(np.float64)
    return SessionRecord(
        state=floats[:state_size],
        step=step,
        revision=revision,
        model_version=version,
        created_at=created,
        last_used_at=used,
        last_values=tuple(floats[state_size : state_size + count].tolist()),
        last_predictions=tuple(floats[state_size + count :].tolist()),
    )
