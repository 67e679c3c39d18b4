"""The rules that advance a session: steps, retries, conflicts, model changes."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pytest

from app.errors import StepConflict
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import FeedOutcome, SessionRecord, feed, reset
from app.stores.record_codec import RecordFormatError, decode_record, encode_record
from tests.helpers import window_rows

NO_INTERVALS = IntervalPolicy.build(None, (), rate=0.05, window=50)


def _feed(
    record: SessionRecord | None,
    forecaster: Forecaster,
    values: Sequence[float],
    step: int | None = None,
    policy: IntervalPolicy = NO_INTERVALS,
) -> tuple[SessionRecord | None, FeedOutcome]:
    return feed(record, forecaster, policy, values, step, now=1000.0)


def _fed(forecaster: Forecaster, values: Sequence[float]) -> SessionRecord:
    record, _ = _feed(None, forecaster, values)
    assert record is not None
    return record


def test_unknown_session_starts_from_zero(forecaster: Forecaster) -> None:
    record, outcome = _feed(None, forecaster, [0.0])
    assert record is not None and record.step == 1 and outcome.step == 1
    _, expected = forecaster.feed(forecaster.zero_state(), [0.0])
    assert outcome.predictions == expected


def test_matching_step_applies_and_other_steps_conflict(forecaster: Forecaster) -> None:
    record, _ = _feed(None, forecaster, [0.0, 0.1])
    advanced, outcome = _feed(record, forecaster, [0.2], step=2)
    assert advanced is not None and outcome.step == 3
    for wrong in (0, 1, 2, 4):  # 2 with another value than the last one is no retry
        with pytest.raises(StepConflict) as conflict:
            _feed(advanced, forecaster, [0.3], step=wrong)
        assert conflict.value.details == {"expected_step": 3}


def test_resending_the_last_request_replays_its_answer(forecaster: Forecaster) -> None:
    record, first = _feed(None, forecaster, [0.0, 0.1], step=0)
    unchanged, again = _feed(record, forecaster, [0.0, 0.1], step=0)
    assert unchanged is None
    assert again.replayed and again.predictions == first.predictions and again.step == 2
    with pytest.raises(StepConflict):  # same step, different values: not a retry
        _feed(record, forecaster, [0.0, 0.2], step=0)


def test_reset_forgets_the_last_request(forecaster: Forecaster) -> None:
    record, _ = _feed(_fed(forecaster, [0.1]), forecaster, [0.5], step=1)
    assert record is not None
    cleared = reset(record, forecaster, NO_INTERVALS, now=2000.0)
    assert cleared.step == 0 and cleared.created_at == record.created_at
    assert not np.any(cleared.state)
    with pytest.raises(StepConflict) as conflict:  # the pre-reset request is no retry now
        _feed(cleared, forecaster, [0.5], step=1)
    assert conflict.value.details == {"expected_step": 0}


def test_session_under_another_model_restarts_its_state_and_says_so(forecaster: Forecaster) -> None:
    old = _fed(forecaster, [0.0, 0.1, 0.2])._replace(model_version="older-model")
    updated, outcome = _feed(old, forecaster, [0.3], step=3)
    assert outcome.previous_model_version == "older-model"
    assert outcome.step == 4 and updated is not None and updated.model_version == forecaster.version
    _, from_zero = forecaster.feed(forecaster.zero_state(), [0.3])
    assert outcome.predictions == from_zero


def test_record_round_trips_through_bytes(forecaster: Forecaster) -> None:
    record = _fed(forecaster, [0.0, 0.1, 0.2])._replace(revision=42)
    decoded = decode_record(encode_record(record))
    assert decoded.step == 3 and decoded.revision == 42
    assert decoded.model_version == record.model_version
    assert np.array_equal(decoded.state, record.state)
    assert decoded.last_values == record.last_values
    assert decoded.last_predictions == record.last_predictions


def test_record_of_other_float_arrays_is_stored_as_float64(forecaster: Forecaster) -> None:
    record = _fed(forecaster, [0.0, 0.1])
    narrow = record._replace(state=record.state.astype(np.float32))
    decoded = decode_record(encode_record(narrow))
    assert decoded.state.dtype == np.float64
    assert np.array_equal(decoded.state, record.state.astype(np.float32))


def test_with_history_changes_the_window_alone(forecaster: Forecaster) -> None:
    record = _fed(forecaster, [0.0, 0.1])._replace(revision=5)
    window = np.ones((2, 2))
    assert record.with_history(window) == record._replace(history=window)


def test_truncated_record_is_refused(forecaster: Forecaster) -> None:
    with pytest.raises(RecordFormatError, match="truncated"):
        decode_record(encode_record(_fed(forecaster, [0.0]))[:-3])


def _legacy_bytes(record: SessionRecord, fmt: int) -> bytes:
    """A record as format 1 (state counted in LSTM units) or 2 (in floats) wrote it."""
    version = record.model_version.encode()
    state_count = len(record.state) // 2 if fmt == 1 else len(record.state)
    count = len(record.last_values)
    header = struct.pack(
        "<BqqddHHH",
        fmt,
        record.step,
        record.revision,
        record.created_at,
        record.last_used_at,
        len(version),
        state_count,
        count,
    )
    floats = [*record.state.tolist(), *record.last_values, *record.last_predictions]
    return header + version + struct.pack(f"<{len(floats)}d", *floats)


@pytest.mark.parametrize("fmt", [1, 2])
def test_records_of_earlier_formats_are_still_read(forecaster: Forecaster, fmt: int) -> None:
    record = _fed(forecaster, [0.0, 0.1])
    decoded = decode_record(_legacy_bytes(record, fmt))
    assert np.array_equal(decoded.state, record.state)
    assert decoded.last_predictions == record.last_predictions
    assert decoded.tracking is None


def test_a_session_from_an_earlier_format_goes_on_with_fresh_tracking(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    record = decode_record(_legacy_bytes(_fed(forecaster, [0.0, 0.1]), 2))
    updated, outcome = _feed(record, forecaster, [0.2], step=2, policy=policy)
    assert outcome.step == 3 and outcome.previous_model_version is None
    assert updated is not None and updated.tracking is not None
    assert policy.skill(updated.tracking).life is not None


def test_tracking_offsets_and_misses_round_trip_through_bytes(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    record, _ = _feed(None, forecaster, [0.0, 0.4, 0.1], policy=policy)
    assert record is not None and record.tracking is not None
    decoded = decode_record(encode_record(record))
    assert decoded.tracking is not None
    assert np.array_equal(decoded.tracking, record.tracking)
    assert decoded.last_offsets == record.last_offsets and len(record.last_offsets) == 6
    assert decoded.last_misses == record.last_misses


def test_a_session_under_another_model_is_rebuilt_from_its_window(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """As a fresh session of the new model fed the window (the last 3 values) and the value."""
    values = [0.0, 0.1, 0.2, 0.3, 0.4]
    old, _ = feed(None, forecaster, policy, values, None, 1000.0, history=3)
    assert old is not None
    old = old._replace(model_version="older-model")
    updated, outcome = feed(old, forecaster, policy, [0.5], 5, 1001.0, history=3)
    fresh, expected = feed(None, forecaster, policy, [0.2, 0.3, 0.4, 0.5], None, 1001.0, history=3)
    assert updated is not None and fresh is not None
    assert outcome.previous_model_version == "older-model" and outcome.warmup_values == 3
    assert outcome.step == 6 and outcome.predictions == expected.predictions[-1:]
    assert np.array_equal(updated.state, fresh.state)
    assert outcome.offsets == expected.offsets[-2:]  # the same interval adaptation
    # Live skill restarts with the new model; the window keeps the old model's forecasts.
    assert policy.skill(updated.tracking).life is None
    new_rows, old_rows = window_rows(updated), window_rows(old)
    assert new_rows[:-2, 1].tolist() == old_rows[1:-1, 1].tolist()
    assert new_rows[-2, 1] == old_rows[-1, 1]  # the forecast served for 0.5


def test_a_long_replay_is_refused_on_the_event_loop(forecaster: Forecaster) -> None:
    from app.session_rules import INLINE_STEPS, ReplayOffEventLoop

    values = [0.1] * (INLINE_STEPS + 1)
    old, _ = feed(None, forecaster, NO_INTERVALS, values, None, 1000.0, history=256)
    assert old is not None
    old = old._replace(model_version="older-model")
    with pytest.raises(ReplayOffEventLoop):
        feed(old, forecaster, NO_INTERVALS, [0.2], None, 1001.0, history=256, inline=True)
    updated, outcome = feed(old, forecaster, NO_INTERVALS, [0.2], None, 1001.0, history=256)
    assert updated is not None and outcome.warmup_values == INLINE_STEPS + 1


def test_the_window_keeps_the_last_values_and_round_trips_through_bytes(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    record: SessionRecord | None = None
    for step, value in enumerate([0.0, 0.1, 0.2, 0.3, 0.4]):
        record, _ = feed(record, forecaster, policy, [value], step, 1000.0, history=3)
    record, _ = feed(record, forecaster, policy, [0.5, 0.6], 5, 1000.0, history=3)
    rows = window_rows(record)
    assert rows.shape == (4, 4)  # 3 values and the pending forecast; 2 levels
    assert rows[:-1, 0].tolist() == [0.4, 0.5, 0.6]
    assert record is not None and rows[-1, 1] == record.last_predictions[-1]
    decoded = decode_record(encode_record(record))
    assert np.array_equal(window_rows(decoded), rows, equal_nan=True)
    assert decoded.last_offsets == record.last_offsets
    assert decoded.last_misses == record.last_misses


def test_records_of_format_3_are_still_read_without_a_window(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    record, _ = feed(None, forecaster, policy, [0.0, 0.4], None, 1000.0, history=0)
    assert record is not None and record.history is None
    data = encode_record(record)
    # Format 3: format 4's header without its last two fields (the window's rows and columns).
    before_history = struct.calcsize("<BqqddHHHII")
    legacy = bytes([3]) + data[1:before_history] + data[before_history + 6 :]
    decoded = decode_record(legacy)
    assert decoded.history is None and decoded.step == 2
    assert decoded.tracking is not None and record.tracking is not None
    assert np.array_equal(decoded.tracking, record.tracking)
    assert decoded.last_misses == record.last_misses


def test_windows_written_with_float64_radii_are_still_read(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """The first cut of format 4 kept the window's radii as float64, row by row."""
    record, _ = feed(None, forecaster, policy, [0.0, 0.4, 0.1], None, 1000.0, history=8)
    assert record is not None and record.history is not None
    data = encode_record(record)
    rows, columns = record.history.shape
    misses = 4 * len(record.last_values)
    new_window = rows * (2 * 8 + (columns - 2) * 4)
    history_at = len(data) - misses - new_window
    first_cut = (
        data[:history_at]
        + np.ascontiguousarray(window_rows(record), dtype="<f8").tobytes()
        + data[len(data) - misses :]
    )
    decoded = decode_record(first_cut)
    assert np.array_equal(window_rows(decoded), window_rows(record), equal_nan=True)
    assert decoded.last_misses == record.last_misses
