"""Session records and the pure rules that advance them; the stores only keep records.

Every change is computed here from the record a store read, then written back by the store
atomically (compare-and-set on ``revision``, a number that only ever increases), so the rules are
the same for every store and two writers can never both advance from the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from app.errors import StepConflict
from app.forecaster import Forecaster, LstmState
from app.intervals import IntervalPolicy
from app.session_history import (
    Window,
    append,
    compiled_push_one,
    pending,
    pending_radii,
    window_values,
)
from app.window_ring import RingWindow
from forecast_core.arrays import FloatArray

# Above this many LSTM steps in one request, compute in a worker thread: a few steps inline are
# cheaper than a thread hop, but milliseconds on the event loop would stall every other request.
INLINE_STEPS = 64


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
    # Adaptive interval offsets and live skill (app.session_tracking); empty: none yet.
    tracking: FloatArray | None = None
    # The last request's interval offsets (one per adapted level per value) and missed levels
    # (a bit per level per value), so that its replay answers the same intervals and flags.
    last_offsets: tuple[float, ...] = ()
    last_misses: tuple[int, ...] = ()
    # The history window (app.session_history): the last raw values, the forecast served for
    # each and its interval radii, then the pending forecast. None: no values kept.
    history: Window | None = None

    def with_revision(self, revision: int) -> SessionRecord:
        """The same record under the revision a store gave it (cheaper than _replace)."""
        (
            state, step, _, version, created, used, values, predictions, tracking, offsets,
            misses, history,
        ) = self  # fmt: skip
        return SessionRecord(
            state, step, revision, version, created, used, values, predictions, tracking, offsets,
            misses, history,
        )  # fmt: skip

    def with_history(self, history: Window | None) -> SessionRecord:
        """The same record with another window (cheaper than _replace)."""
        (
            state, step, revision, version, created, used, values, predictions, tracking,
            offsets, misses, _,
        ) = self  # fmt: skip
        return SessionRecord(
            state, step, revision, version, created, used, values, predictions, tracking, offsets,
            misses, history,
        )  # fmt: skip


class FeedOutcome(NamedTuple):
    """What a feed request answers."""

    predictions: list[float]
    step: int
    model_version: str
    replayed: bool  # a retry of the last applied request: nothing advanced
    previous_model_version: str | None  # set when the state was restarted for a new model
    offsets: tuple[float, ...]  # per value, the session's offset per adapted level
    misses: tuple[int, ...]  # per value, a bit per adapted level its revealed value missed
    # Per value, the absolute error of the forecast it revealed (NaN: no forecast before it).
    # Empty for a replay: nothing new was revealed.
    errors: tuple[float, ...] = ()
    # After a model change: how many values of the history window warmed the new state.
    warmup_values: int | None = None


class ReplayOffEventLoop(Exception):
    """A model change needs a replay too long to run on the event loop: compute it again in a
    worker thread (raised before anything is written)."""


def fresh_record(forecaster: Forecaster, policy: IntervalPolicy, now: float) -> SessionRecord:
    return SessionRecord(
        state=forecaster.zero_state(),
        step=0,
        revision=0,
        model_version=forecaster.version,
        created_at=now,
        last_used_at=now,
        tracking=policy.fresh_tracking(),
    )


def feed(
    record: SessionRecord | None,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    values: Sequence[float],
    expected_step: int | None,
    now: float,
    *,
    history: int = 0,
    inline: bool = False,
) -> tuple[SessionRecord | None, FeedOutcome]:
    """Apply values to a session (None: unknown, starts from zero), honouring ``expected_step``.

    ``history``: values the session keeps in its window (FORECAST_SESSION_HISTORY). A session
    whose state belongs to another model is first rebuilt by replaying its window through this
    one (``inline``: the caller runs on the event loop, so a long replay raises
    ReplayOffEventLoop instead). Returns the record to write (None when nothing changes) and
    the answer.
    """
    current = record if record is not None else fresh_record(forecaster, policy, now)
    if expected_step is not None and expected_step != current.step:
        if _is_retry_of_last(current, values, expected_step):
            return None, _replay(current, policy)
        raise StepConflict(expected_step, current.step)
    if current.model_version != forecaster.version:
        return _feed_after_model_change(
            current, forecaster, policy, values, now, history=history, inline=inline
        )
    state, tracking = current.state, current.tracking
    # The forecast this request's first value reveals the error of, and the value before it.
    previous = (
        (current.last_predictions[-1], current.last_values[-1]) if current.last_values else None
    )
    if tracking is None or tracking.shape[0] != policy.layout.size:
        tracking = policy.fresh_tracking()  # first use, or other levels or window configured
    new_state, predictions = forecaster.feed(state, values)
    tracking, offsets, misses, errors = policy.track_values(tracking, previous, values, predictions)
    window = _next_window(current.history, history, policy, values, predictions, offsets, tracking)
    step = current.step + len(values)
    # Positional constructors: this runs on every request, and keywords and _replace cost more.
    updated = SessionRecord(
        new_state, step, current.revision, forecaster.version, current.created_at, now,
        tuple(values), tuple(predictions), tracking, offsets, misses, window,
    )  # fmt: skip
    outcome = FeedOutcome(
        predictions, step, forecaster.version, False, None, offsets, misses, errors
    )
    return updated, outcome


def _next_window(
    kept: Window | None,
    capacity: int,
    policy: IntervalPolicy,
    values: Sequence[float],
    predictions: Sequence[float],
    offsets: Sequence[float],
    tracking: FloatArray,
) -> Window | None:
    if capacity <= 0:
        return None
    levels = policy.layout.levels
    if isinstance(kept, RingWindow):
        if len(values) == 1:
            # A store's ring: the step's two rows written into its bytes, nothing decoded.
            radii = pending_radii(tracking, policy.parameters, levels)
            pushed = kept.pushed(capacity, values[0], predictions[0], radii)
            if pushed is not None:
                return pushed
    window = kept.array() if isinstance(kept, RingWindow) else kept
    if len(values) == 1 and (window is None or window.shape[1] == 2 + levels):
        # /predict: one compiled call (the pending radii come from the new tracking).
        empty = (
            _EMPTY_WINDOWS[levels] if levels < len(_EMPTY_WINDOWS) else np.empty((0, 2 + levels))
        )
        return compiled_push_one(
            window if window is not None else empty,
            capacity,
            values[0],
            predictions[0],
            tracking,
            policy.parameters,
            levels,
        )
    return append(window, capacity, values, predictions, offsets, policy.scores)


_EMPTY_WINDOWS = tuple(np.empty((0, 2 + levels)) for levels in range(8))


def replay_window(
    forecaster: Forecaster, policy: IntervalPolicy, window: FloatArray
) -> tuple[LstmState, list[float], FloatArray]:
    """A fresh session of ``forecaster`` fed ``window``: its state, forecasts and tracking."""
    state, forecasts = forecaster.feed(forecaster.zero_state(), window.tolist())
    tracking, _, _, _ = policy.track_values(
        policy.fresh_tracking(), None, window.tolist(), forecasts
    )
    return state, forecasts, tracking


def _feed_after_model_change(
    current: SessionRecord,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    values: Sequence[float],
    now: float,
    *,
    history: int,
    inline: bool,
) -> tuple[SessionRecord, FeedOutcome]:
    """State learnt under another model means nothing to this one: rebuild it by replaying the
    history window, as a fresh session of this model fed the window and then ``values`` would
    be (state, forecasts and interval adaptation alike). The count goes on."""
    window = window_values(current.history)[-history:] if history > 0 else np.empty(0)
    if inline and len(window) + len(values) > INLINE_STEPS:
        raise ReplayOffEventLoop
    state, forecasts, tracking = replay_window(forecaster, policy, window)
    previous = (forecasts[-1], float(window[-1])) if len(window) else None
    new_state, predictions = forecaster.feed(state, values)
    tracking, offsets, misses, errors = policy.track_values(tracking, previous, values, predictions)
    # The skill figures describe forecasts this model served: they restart here.
    tracking = policy.without_skill(tracking)
    # The first value is judged against the forecast the client was served for it (the old
    # model's, kept in the window), not the replay's.
    served = pending(current.history)
    first_missed, first_error = policy.judge(values[0], served)
    misses = (first_missed, *misses[1:])
    errors = (first_error, *errors[1:])
    kept = current.history if history > 0 else None
    new_window = _next_window(kept, history, policy, values, predictions, offsets, tracking)
    step = current.step + len(values)
    updated = SessionRecord(
        new_state, step, current.revision, forecaster.version, current.created_at, now,
        tuple(values), tuple(predictions), tracking, offsets, misses, new_window,
    )  # fmt: skip
    outcome = FeedOutcome(
        predictions, step, forecaster.version, False, current.model_version, offsets, misses,
        errors, len(window),
    )  # fmt: skip
    return updated, outcome


def feed_items(
    record: SessionRecord | None,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    values: Sequence[float],
    steps: Sequence[int | None],
    now: float,
    *,
    history: int = 0,
    inline: bool = False,
) -> tuple[SessionRecord | None, tuple[FeedOutcome, int]]:
    """Apply one session's items of a /predict/many request, in order, as one feed.

    The first item's step is the feed's ``expected_step`` (so a resend of the whole request
    replays the whole group); a later item may send no step, or the first's plus its position.
    The feed stops before the first item that sends another: the answer is the outcome of the
    items applied and how many they are (that item and those after it are refused by the caller).
    ``history`` and ``inline`` are :func:`feed`'s: the history window and the model-change
    replay apply to the group as to one /predict request.
    """
    first = steps[0]
    applied = len(steps)
    if applied == 1:  # the common case: one item for this session
        new, outcome = feed(
            record, forecaster, policy, values, first, now, history=history, inline=inline
        )
        return new, (outcome, 1)
    base = first if first is not None else (record.step if record is not None else 0)
    for position in range(1, applied):
        step = steps[position]
        if step is not None and step != base + position:
            applied = position
            break
    fed = values if applied == len(values) else values[:applied]
    new, outcome = feed(record, forecaster, policy, fed, first, now, history=history, inline=inline)
    return new, (outcome, applied)


def _replay(record: SessionRecord, policy: IntervalPolicy) -> FeedOutcome:
    count = len(record.last_predictions)
    offsets = record.last_offsets
    if len(offsets) != count * policy.layout.levels:
        # Written before intervals, or under other configured levels: the session's offsets now.
        offsets = tuple(policy.current_offsets(record.tracking)) * count
    misses = record.last_misses if len(record.last_misses) == count else (0,) * count
    return FeedOutcome(
        predictions=list(record.last_predictions),
        step=record.step,
        model_version=record.model_version,
        replayed=True,
        previous_model_version=None,
        offsets=offsets,
        misses=misses,
    )


def _is_retry_of_last(record: SessionRecord, values: Sequence[float], expected_step: int) -> bool:
    # A client that lost the response resends the same values with the step it sent before.
    return (
        len(record.last_values) == len(values) > 0
        and expected_step == record.step - len(values)
        and record.last_values == tuple(values)
    )


def reset(
    record: SessionRecord | None, forecaster: Forecaster, policy: IntervalPolicy, now: float
) -> SessionRecord:
    """Zero state, step 0, no tracking; kept as a record so its revision keeps increasing."""
    created = record.created_at if record is not None else now
    return fresh_record(forecaster, policy, now)._replace(created_at=created)
