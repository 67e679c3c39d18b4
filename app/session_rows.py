"""Sessions kept as rows of shared arrays, many stepped in place by one compiled call.

The memory store's fast path for ``/predict/many``: a session's record becomes a row of a
:class:`SessionRows` (one per model version, interval policy and window capacity) the first
time such a request steps it, and stays one while only such requests step it. Anything else
that reads the session (``/predict``, a reset, ``GET``, a list, a model change) turns the row
back into the :class:`~app.session_rules.SessionRecord` the record path would have written, and
goes on from there.

A row holds what that record holds after a step of one value: the state, the step count, the
tracking array, the history window as a ring, and the last value, forecast, offsets and misses
(for a retry's replay). The step itself is the record path's: the same compiled session step
(forecast_core.session_step), tracking step (app.session_tracking) and window radius
(app.session_history), so both paths compute the same numbers.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.schemas import Interval
from app.session_history import compiled_interval_radius, compiled_window_radius
from app.session_rules import SessionRecord
from app.session_tracking import compiled_track_in_place
from app.window_ring import RingWindow
from forecast_core.arrays import FloatArray
from forecast_core.lstm_step import compiled_finite
from forecast_core.session_step import compiled_session_step

IntArray = npt.NDArray[np.int64]

logger = logging.getLogger(__name__)

# Rows allocated at first: the store's cap, or as many as this many bytes hold (at least
# _FIRST_ROWS); past them the arrays double when they fill.
_ALLOCATED_AT_ONCE = 1 << 30
_FIRST_ROWS = 64


class Stepped(NamedTuple):
    """What a request's in-place feed answers: per session stepped (``indexes``: its position
    in the request's keys), as session_rules.feed's outcome would, in lists cheap to read."""

    indexes: list[int]
    predictions: list[float]
    steps: list[int]
    offsets: list[list[float]]  # per session, its offset per adapted level
    intervals: list[list[Interval]]  # per session, its next intervals at the adapted levels
    misses: list[int]  # per session, a bit per adapted level its revealed value missed
    errors: list[float]  # per session, the absolute error of the forecast it revealed (or NaN)

    @classmethod
    def nothing(cls) -> Stepped:
        """No session stepped: all take the record path."""
        return cls([], [], [], [], [], [], [])

    def only(self, kept: Sequence[int]) -> Stepped:
        """These sessions only (``kept``: their places in these lists, in order), for a store
        whose write of the others failed (they take the record path)."""
        return Stepped(
            [self.indexes[i] for i in kept],
            [self.predictions[i] for i in kept],
            [self.steps[i] for i in kept],
            [self.offsets[i] for i in kept],
            [self.intervals[i] for i in kept],
            [self.misses[i] for i in kept],
            [self.errors[i] for i in kept],
        )


class RowRef(NamedTuple):
    """Where a session lives while it is a row."""

    rows: SessionRows
    row: int


class _Columns(NamedTuple):
    """Every row's figures, an array each: row ``i`` of each is the session in row ``i``."""

    states: FloatArray
    tracking: FloatArray
    # The history window, a ring: each step's row in slot step mod (capacity + 1); ``heads``:
    # the pending row's slot.
    windows: FloatArray
    heads: IntArray
    counts: IntArray  # the window's rows (0: none yet)
    steps: IntArray
    revisions: IntArray
    created: FloatArray
    used: FloatArray
    last_values: FloatArray  # the last value and forecast: NaN while none (step 0)
    last_predictions: FloatArray
    last_offsets: FloatArray
    last_misses: IntArray

    def doubled(self) -> _Columns:
        """The same columns with twice the rows, the new ones zero."""
        return _Columns._make(_doubled(column) for column in self)


class SessionRows:
    """Rows of sessions of one model version, interval policy and window capacity."""

    def __init__(
        self, forecaster: Forecaster, policy: IntervalPolicy, capacity: int, most: int
    ) -> None:
        """``most``: the sessions these rows may ever hold (the store's cap), allocated at once
        up to about a GiB: numpy takes zeroed memory from the system untouched, so only the
        rows used take memory, and growing never copies the arrays under the store's lock."""
        self.forecaster = forecaster
        self.policy = policy
        self.capacity = capacity
        step = forecaster.step
        self._packed = step.weights._packed
        self._minimum = step.scaling.minimum
        self._span = step.scaling.span
        self._shrink = step.transform.shrink
        self._difference = step.transform.is_difference
        self._levels = policy.layout.levels
        self._width = 2 + self._levels
        self._state_size = step.state_size
        self._tracking_size = policy.layout.size
        ring = capacity + 1 if capacity > 0 else 0
        row_bytes = 8 * (
            self._state_size + self._tracking_size + ring * self._width + 2 * self._levels + 10
        )
        rows = min(most, max(_FIRST_ROWS, _ALLOCATED_AT_ONCE // row_bytes))
        self.columns = _Columns(
            states=np.zeros((rows, self._state_size)),
            tracking=np.zeros((rows, self._tracking_size)),
            windows=np.zeros((rows, ring, self._width)),
            heads=np.zeros(rows, np.int64),
            counts=np.zeros(rows, np.int64),
            steps=np.zeros(rows, np.int64),
            revisions=np.zeros(rows, np.int64),
            created=np.zeros(rows),
            used=np.zeros(rows),
            last_values=np.zeros(rows),
            last_predictions=np.zeros(rows),
            last_offsets=np.zeros((rows, self._levels)),
            last_misses=np.zeros(rows, np.int64),
        )
        self._free = list(range(rows - 1, -1, -1))
        self.live = 0

    def step_of(self, row: int) -> int:
        """The session's step count."""
        return int(self.columns.steps[row])

    def last_used(self, row: int) -> float:
        """When the session was last stepped."""
        return float(self.columns.used[row])

    def adopt(self, record: SessionRecord) -> int | None:
        """A row holding ``record`` (to be stepped at once; its window an array or the ring a
        store read it as), or None when the record path must step it: another model version,
        or a window or tracking of other settings."""
        if record.model_version != self.forecaster.version:
            return None
        history = record.history
        if isinstance(history, RingWindow):
            history = history.array()
        if self.capacity > 0:
            if history is not None and (
                not isinstance(history, np.ndarray)
                or history.ndim != 2
                or history.shape[1] != self._width
                or history.shape[0] > self.capacity + 1
            ):
                return None
        elif history is not None:
            return None
        if not self._free:
            size = self.columns.steps.shape[0]
            self.columns = self.columns.doubled()
            self._free.extend(range(2 * size - 1, size - 1, -1))
        row = self._free.pop()
        columns = self.columns
        self.live += 1
        columns.states[row] = record.state
        tracking = record.tracking
        if tracking is None or tracking.shape[0] != self._tracking_size:
            tracking = self.policy.fresh_tracking()  # as session_rules.feed does
        columns.tracking[row] = tracking
        kept = 0 if history is None else history.shape[0]
        head = 0
        if self.capacity > 0:
            # Each step's row in the slot of its step (the pending row's: step + 1), as a store
            # keeps a full window's ring (app.window_ring): such a ring is then the row as is.
            slots = self.capacity + 1
            head = (record.step + 1) % slots
            # Slots outside the window are written out as they are (a store's ring holds
            # whatever there): none may hold a session that had the row before.
            columns.windows[row] = 0.0
            if kept:
                columns.windows[row, (np.arange(head - kept + 1, head + 1)) % slots] = history
        columns.counts[row] = kept
        columns.heads[row] = head
        columns.steps[row] = record.step
        columns.revisions[row] = record.revision
        columns.created[row] = record.created_at
        columns.used[row] = record.last_used_at
        if record.last_values:
            columns.last_values[row] = record.last_values[-1]
            columns.last_predictions[row] = record.last_predictions[-1]
        else:
            columns.last_values[row] = math.nan
            columns.last_predictions[row] = math.nan
        return row

    def record(self, row: int) -> SessionRecord:
        """The record of a stepped row, as the record path would have written it."""
        columns = self.columns
        count, head = int(columns.counts[row]), int(columns.heads[row])
        window: FloatArray | None = None
        if self.capacity > 0:
            slots = self.capacity + 1
            order = [(head - count + 1 + index) % slots for index in range(count)]
            window = columns.windows[row, order]
        return SessionRecord(
            columns.states[row].copy(),
            int(columns.steps[row]),
            int(columns.revisions[row]),
            self.forecaster.version,
            float(columns.created[row]),
            float(columns.used[row]),
            (float(columns.last_values[row]),),
            (float(columns.last_predictions[row]),),
            columns.tracking[row].copy(),
            tuple(columns.last_offsets[row].tolist()),
            (int(columns.last_misses[row]),),
            window,
        )

    def release(self, row: int) -> None:
        """The row is free again (its session went back to a record, or ended)."""
        self._free.append(row)
        self.live -= 1

    def step(
        self, indexes: list[int], rows: Sequence[int], values: Sequence[float], now: float
    ) -> Stepped:
        """Feed each row its value (distinct rows), in place; ``indexes``: their sessions'
        positions in the request."""
        columns = self.columns
        count = len(rows)
        chosen = np.array(rows, dtype=np.int64)
        predictions = np.empty(count)
        lower = np.empty((count, self._levels))
        upper = np.empty((count, self._levels))
        errors = np.empty(count)
        _compiled_step_rows(
            self._packed, self._minimum, self._span, self._shrink, self._difference,
            self.policy.parameters, self._levels, self.capacity, now, chosen,
            np.array(values, dtype=np.float64), columns.states, columns.tracking, columns.windows,
            columns.heads, columns.counts, columns.steps, columns.used, columns.last_values,
            columns.last_predictions, columns.last_offsets, columns.last_misses, predictions, lower,
            upper, errors,
        )  # fmt: skip
        return Stepped(
            indexes,
            predictions.tolist(),
            columns.steps[chosen].tolist(),
            columns.last_offsets[chosen].tolist(),
            self.policy.intervals_of_bounds(lower, upper),
            columns.last_misses[chosen].tolist(),
            errors.tolist(),
        )


class RowsByModel:
    """A store's rows, one :class:`SessionRows` per model version, interval policy and window
    capacity; rows that hold no session any more are let go of (their arrays with them)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int, int], SessionRows] = {}

    def of(
        self, forecaster: Forecaster, policy: IntervalPolicy, capacity: int, most: int
    ) -> SessionRows:
        """The rows of this model, policy and capacity, made if need be (``most``: the sessions
        they may ever hold)."""
        key = _rows_key(forecaster, policy, capacity)
        rows = self._rows.get(key)
        if rows is None or rows.forecaster is not forecaster or rows.policy is not policy:
            rows = SessionRows(forecaster, policy, capacity, most)
            self._rows[key] = rows
        return rows

    def keep(self, rows: SessionRows) -> None:
        """Keep ``rows`` as their model's, policy's and capacity's (again, if let go of)."""
        self._rows[_rows_key(rows.forecaster, rows.policy, rows.capacity)] = rows

    def release(self, rows: SessionRows, row: int) -> None:
        """Free ``row`` of ``rows``; the rows go if it was their last session."""
        rows.release(row)
        if not rows.live:
            self.drop(rows)

    def drop(self, rows: SessionRows) -> None:
        self._rows = {key: kept for key, kept in self._rows.items() if kept is not rows}

    def clear(self) -> None:
        self._rows.clear()

    def live(self) -> int:
        """Sessions held in all the rows."""
        return sum(rows.live for rows in self._rows.values())


def _rows_key(
    forecaster: Forecaster, policy: IntervalPolicy, capacity: int
) -> tuple[str, int, int]:
    # The policy by identity: a reload builds a new one, and the rows keep it alive.
    return forecaster.version, id(policy), capacity


def _doubled(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``array`` with twice its rows, the new ones zero."""
    out = np.zeros((2 * array.shape[0], *array.shape[1:]), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


def _step_rows(
    packed: FloatArray,
    minimum: float,
    span: float,
    shrink: float,
    difference: bool,
    parameters: FloatArray,
    levels: int,
    capacity: int,
    now: float,
    rows: IntArray,
    values: FloatArray,
    states: FloatArray,
    tracking: FloatArray,
    windows: FloatArray,
    heads: IntArray,
    counts: IntArray,
    steps: IntArray,
    used: FloatArray,
    last_values: FloatArray,
    last_predictions: FloatArray,
    last_offsets: FloatArray,
    last_misses: IntArray,
    predictions: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    errors: FloatArray,
) -> None:
    # session_rules.feed for one value, per row: the session step, then the tracking of the
    # revealed value against the last forecast, then the window push (_push_one's rows).
    scratch = np.empty(states.shape[1])
    slots = capacity + 1
    for index in range(rows.shape[0]):
        row = rows[index]
        value = values[index]
        state = states[row]
        prediction = compiled_session_step(
            packed, state, scratch, value, minimum, span, shrink, difference
        )
        state[:] = scratch
        session = tracking[row]
        missed = 0
        error = math.nan
        if not math.isnan(last_values[row]):
            signed = value - last_predictions[row]
            missed = compiled_track_in_place(
                session, signed, value - last_values[row], parameters, levels
            )
            error = abs(signed)
        if capacity > 0:
            kept = counts[row]
            head = heads[row]
            window = windows[row]
            if kept == 0:  # the window starts with the row of the value revealed now
                head = (steps[row] + 1) % slots
                for column in range(window.shape[1]):
                    window[head, column] = math.nan
                kept = 1
            window[head, 0] = value
            head = (head + 1) % slots
            window[head, 0] = math.nan
            window[head, 1] = prediction
            for level in range(levels):
                window[head, 2 + level] = compiled_window_radius(session, parameters, levels, level)
            heads[row] = head
            counts[row] = min(kept + 1, slots)
        for level in range(levels):
            last_offsets[row, level] = session[levels + 1 + level]
            # The next interval, as IntervalPolicy.intervals makes it from the offsets.
            radius = compiled_interval_radius(session, parameters, levels, level)
            lower[index, level] = compiled_finite(prediction - radius)
            upper[index, level] = compiled_finite(prediction + radius)
        steps[row] += 1
        used[row] = now
        last_values[row] = value
        last_predictions[row] = prediction
        last_misses[row] = missed
        predictions[index] = prediction
        errors[index] = error


_compiled_step_rows = numba.njit(cache=False, fastmath=False)(_step_rows)


def step_rows_compiled() -> bool:
    """Whether the in-place step is compiled (compiling takes seconds: see compile_step_rows)."""
    return bool(_compiled_step_rows.signatures)


def compile_step_rows() -> None:
    """Compile the in-place step for the argument types serving passes, by stepping one row of
    a one-unit network: seconds of work, to run in a thread of its own (numba compiles each
    function once per process, and once more for each other set of argument types: the
    weights and the tracking parameters are read-only, as serving's are)."""
    units, levels, capacity = 1, 1, 1
    tracking_size = 3 * levels + 7 + (2 + levels)  # a skill window of one value
    packed = np.zeros((units + 3, 4 * units))
    parameters = np.ones(3 + 2 * levels)
    for read_only in (packed, parameters):
        read_only.setflags(write=False)
    _compiled_step_rows(
        packed, 0.0, 1.0, 1.0, True, parameters, levels, capacity, 0.0,
        np.zeros(1, np.int64), np.zeros(1), np.zeros((1, 2 * units + 1)),
        np.ones((1, tracking_size)), np.zeros((1, capacity + 1, 2 + levels)),
        np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1),
        np.full(1, math.nan), np.zeros(1), np.zeros((1, levels)), np.zeros(1, np.int64),
        np.zeros(1), np.zeros((1, levels)), np.zeros((1, levels)), np.zeros(1),
    )  # fmt: skip


def step_rows_signatures() -> int:
    """How many argument-type variants of the in-place step are compiled (one, when serving
    passes the types compile_step_rows compiled)."""
    return len(_compiled_step_rows.signatures)


def _compile_step_rows_logged() -> None:
    try:
        compile_step_rows()
    except Exception:  # a bug: serving goes on, every session on the record path
        logger.exception("compiling the in-place step failed: /predict/many keeps to records")


class StepRowsCompiling:
    """A store's start of the in-place step's compilation: in a thread of its own, the first
    time the store wants the step; until it is done, the store's requests take the record path."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._compiled = False  # asked once per request: numba's own answer costs more

    def ready(self) -> bool:
        """Whether the step is compiled; starts compiling it if not."""
        if self._compiled:
            return True
        if step_rows_compiled():
            self._compiled = True
            return True
        if self._thread is None:
            self._thread = threading.Thread(
                target=_compile_step_rows_logged, name="compile-step-rows", daemon=True
            )
            self._thread.start()
        return False

    def join(self) -> None:
        """Wait for a compilation started here to end."""
        if self._thread is not None:
            self._thread.join()
