"""Session records and the pure rules that advance them; the stores only keep records.

Every change is computed here from the record a store read, then written back by the store
atomically (compare-and-set on ``revision``, a number that only ever increases), so the rules are
the same for every store and two writers can never both advance from the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from app.errors import StepConflict
from app.forecaster import Forecaster, LstmState


class SessionRecord(NamedTuple):
    """Everything the service keeps about one session (a NamedTuple: cheap to build and copy).

    Stores keep it in the binary form of :mod:`app.stores.record_codec`.
    """

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
        raise StepConflict(expected_step, current.step)
    previous_model: str | None = None
    state = current.state
    if current.model_version != forecaster.version:
        # State learnt under another model means nothing to this one: restart it, keep counting.
        previous_model = current.model_version
        state = forecaster.zero_state()
    new_state, predictions = forecaster.feed(state, values)
    # The constructor, not _replace: this runs on every request and _replace is slower.
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
