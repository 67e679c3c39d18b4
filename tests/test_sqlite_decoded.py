"""The SQLite writer's memory of the rows it wrote or read: a row is known by its bytes (the
store's own tests are in tests/test_sqlite_window.py)."""

from __future__ import annotations

import numpy as np

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.stores.record_codec import encode_record
from app.stores.sqlite_decoded import DecodedRows
from tests.test_redis_window import fed_in_memory


def test_a_row_whose_bytes_changed_is_decoded_again(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    rows = DecodedRows()
    old = fed_in_memory(forecaster, policy, [[0.1]], 0).with_revision(1)
    new = fed_in_memory(forecaster, policy, [[0.1], [0.2]], 0).with_revision(2)
    old_data, new_data = encode_record(old), encode_record(new)
    rows.written("s", old_data, old)
    assert rows.record("s", new_data, None).revision == 2


def test_the_least_recently_used_row_is_dropped_at_the_limit(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    rows = DecodedRows(limit=2)
    record = fed_in_memory(forecaster, policy, [[0.1]], 0)
    data = encode_record(record)
    for key in ("a", "b"):
        rows.written(key, data, record)
    rows.record("a", data, None)  # "a" used again: "b" is now the oldest
    rows.written("c", data, record)
    assert rows.record("a", data, None) is record
    assert rows.record("b", data, None) is not record  # decoded again


def test_a_forgotten_row_is_decoded_again(forecaster: Forecaster, policy: IntervalPolicy) -> None:
    rows = DecodedRows()
    record = fed_in_memory(forecaster, policy, [[0.1]], 0)
    data = encode_record(record)
    rows.written("s", data, record)
    rows.forget("s")  # deleted, or expired
    assert rows.record("s", data, None) is not record


def test_a_record_of_float32_state_is_not_remembered_as_written(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """Decoding gives float64: only a decode gives back what a read would."""
    rows = DecodedRows()
    record = fed_in_memory(forecaster, policy, [[0.1]], 0)
    narrow = record._replace(state=record.state.astype(np.float32))
    data = encode_record(narrow)
    rows.written("s", data, narrow)
    assert rows.record("s", data, None).state.dtype == np.float64
