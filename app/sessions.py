"""Session records and the pure rules that advance them; the stores only keep records.

Every change is computed here from the record a store read, then written back by the store
atomically (compare-and-set on ``revision``, a number that only ever increases), so the rules are
the same for every store and two writers can never both advance from the same state.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from app.errors import StepConflict
from app.forecaster import Forecaster, LstmState

_HEADER = struct.Struct("<BqqddHHH")
_RECORD_FORMAT = 1


class SessionRecord(NamedTuple):
    """Everything the service keeps about one session (a NamedTuple: cheap to build and copy)."""

    state: LstmState
    step: int  # values consumed since creation or the last reset
    revision: int  # set by the store on every write; only ever increases
    model_version: str
    created_at: float
    last_used_at: float
    # The last applied request, so that a retry of it gets the same answer without advancing.
    last_values: tuple[float, ...] = ()
    last_predictions: tuple[float, ...] = ()

    def with_revision(self, revision: int) -> SessionRecord:
        """The same record under the revision a store gave it (cheaper than _replace)."""
        state, step, _, version, created, used, values, predictions = self
        return SessionRecord(state, step, revision, version, created, used, values, predictions)

    def encode(self) -> bytes:
        """Compact binary form for durable and shared stores."""
        version = self.model_version.encode()
        count = len(self.last_values)
        return b"".join(
            (
                _HEADER.pack(
                    _RECORD_FORMAT,
                    self.step,
                    self.revision,
                    self.created_at,
                    self.last_used_at,
                    len(version),
                    len(self.state) // 2,
                    count,
                ),
                version,
                np.asarray(self.state, dtype="<f8").tobytes(),
                # struct, not numpy, for the short tuples: a third of the cost per request.
                struct.pack(f"<{2 * count}d", *self.last_values, *self.last_predictions),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> SessionRecord:
        fmt, step, revision, created, used, version_len, units, count = _HEADER.unpack_from(data)
        if fmt != _RECORD_FORMAT:
            raise ValueError(f"unknown session record format {fmt}")
        offset = _HEADER.size
        if len(data) != offset + version_len + 8 * (2 * units + 2 * count):
            raise ValueError("truncated session record")
        version = data[offset : offset + version_len].decode()
        offset += version_len
        floats = np.frombuffer(data, dtype="<f8", offset=offset).astype(np.float64)
        state = floats[: 2 * units]
        values = floats[2 * units : 2 * units + count]
        predictions = floats[2 * units + count :]
        return cls(
            state=state,
            step=step,
            revision=revision,
            model_version=version,
            created_at=created,
            last_used_at=used,
            last_values=tuple(values.tolist()),
            last_predictions=tuple(predictions.tolist()),
        )


class FeedOutcome(NamedTuple):
    """What a feed request answers."""

    predictions: list[float]
    step: int
    model_version: str
    replayed: bool  # a retry of the last applied request: nothing advanced
    previous_model_version: str | None  # set when the state was restarted for a new model


def fresh_record(forecaster: Forecaster, now: float) -> SessionRecord:
    return SessionRecord(
        state=forecaster.zero_state(),
        step=0,
        revision=0,
        model_version=forecaster.version,
        created_at=now,
        last_used_at=now,
    )


def feed(
    record: SessionRecord | None,
    forecaster: Forecaster,
    values: Sequence[float],
    expected_step: int | None,
    now: float,
) -> tuple[SessionRecord | None, FeedOutcome]:
    """Apply values to a session (None: unknown, starts from zero), honouring ``expected_step``.

    Returns the record to write (None when nothing changes) and the answer.
    """
    current = record if record is not None else fresh_record(forecaster, now)
    if expected_step is not None and expected_step != current.step:
        if _is_retry_of_last(current, values, expected_step):
            return None, FeedOutcome(
                predictions=list(current.last_predictions),
                step=current.step,
                model_version=current.model_version,
                replayed=True,
                previous_model_version=None,
            )
        raise StepConflict(
            f"step {expected_step} does not match this session, which has consumed "
            f"{current.step} value(s); send step={current.step} to append",
            expected_step=current.step,
        )
    previous_model: str | None = None
    state = current.state
    if current.model_version != forecaster.version:
        # State learnt under another model means nothing to this one: restart it, keep counting.
        previous_model = current.model_version
        state = forecaster.zero_state()
    new_state, predictions = forecaster.feed(state, values)
    # The constructor, not _replace: this runs on every request and _replace costs ~2 µs.
    updated = SessionRecord(
        state=new_state,
        step=current.step + len(values),
        revision=current.revision,
        model_version=forecaster.version,
        created_at=current.created_at,
        last_used_at=now,
        last_values=tuple(values),
        last_predictions=tuple(predictions),
    )
    return updated, FeedOutcome(
        predictions=predictions,
        step=updated.step,
        model_version=forecaster.version,
        replayed=False,
        previous_model_version=previous_model,
    )


def _is_retry_of_last(record: SessionRecord, values: Sequence[float], expected_step: int) -> bool:
    # A client that lost the response resends the same values with the step it sent before.
    return (
        len(record.last_values) == len(values) > 0
        and expected_step == record.step - len(values)
        and record.last_values == tuple(values)
    )


def reset(record: SessionRecord | None, forecaster: Forecaster, now: float) -> SessionRecord:
    """Zero state, step 0; kept as a record so its revision keeps increasing."""
    created = record.created_at if record is not None else now
    return fresh_record(forecaster, now)._replace(created_at=created)
