"""The history window kept beside the record in SQLite: a ring in the session's row, whose
changed rows a step rewrites in place; and the writer's memory of the rows it wrote, which must
be what decoding them gives."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import SessionRecord
from app.stores.record_codec import FORMAT, decode_record, encode_record
from app.stores.sqlite import SqliteStore
from app.window_ring import row_size
from tests.helpers import assert_same_record, window_rows
from tests.test_redis_window import (
    HISTORY,
    NOW,
    REQUESTS,
    assert_a_larger_window_carries_on,
    assert_holds_the_window_fed,
    fed_in_memory,
    feeding,
)

pytestmark = pytest.mark.anyio

MakeStore = Callable[[int], SqliteStore]


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Processes sharing one session file, each keeping ``history`` values."""
    opened: list[SqliteStore] = []

    def make(history: int) -> SqliteStore:
        store = SqliteStore(
            tmp_path / "sessions.sqlite3",
            ttl_s=60,
            max_sessions=100,
            clock=lambda: NOW,
            history=history,
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def _row(path: Path, key: str = "s") -> tuple[bytes, bytes | None]:
    with sqlite3.connect(path) as connection:
        record, ring = connection.execute(
            "SELECT record, ring FROM sessions WHERE key = ?", (key,)
        ).fetchone()
    return record, ring


async def test_a_window_read_back_is_the_window_fed(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    writer = make_store(HISTORY)
    for values in REQUESTS:  # more values than the ring has slots: it wraps
        await writer.apply("s", feeding(forecaster, policy, values, HISTORY))
    read = await make_store(HISTORY).get("s")
    assert_holds_the_window_fed(read, forecaster, policy, REQUESTS, HISTORY)


async def test_a_step_rewrites_the_rows_it_changed_and_keeps_the_rows_size(
    make_store: MakeStore, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """Same size: SQLite overwrites the row in place, writing only the pages that changed."""
    store = make_store(64)
    await store.apply("s", feeding(forecaster, policy, [0.1] * 70, 64))
    await store.apply("s", feeding(forecaster, policy, [0.15], 64))  # a record of one value
    record, ring = _row(tmp_path / "sessions.sqlite3")
    await store.apply("s", feeding(forecaster, policy, [0.2], 64))
    record_after, ring_after = _row(tmp_path / "sessions.sqlite3")
    assert ring is not None and ring_after is not None
    assert (len(record_after), len(ring_after)) == (len(record), len(ring))
    changed = [i for i in range(len(ring)) if ring[i] != ring_after[i]]
    row = row_size(4)
    # Two rows: the pending one gets its value, the next is the new pending one (they may sit
    # at both ends of the ring when it wraps).
    assert changed and len({i // row for i in changed}) <= 2


async def test_stores_keeping_other_window_sizes_share_the_file(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """During a rollout that changes FORECAST_SESSION_HISTORY: the ring read is the truth of
    its own size, whatever the reader keeps."""
    small, large = make_store(HISTORY), make_store(HISTORY + 3)
    await assert_a_larger_window_carries_on(
        small, large, make_store(HISTORY + 3), forecaster, policy
    )


async def test_a_file_from_before_the_ring_is_read_and_carried_on(
    tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """A session file whose table has no ring column and whose records hold their window."""
    path = tmp_path / "sessions.sqlite3"
    old = fed_in_memory(forecaster, policy, REQUESTS[:4], HISTORY).with_revision(7)
    data = encode_record(old)
    assert data[0] == FORMAT and decode_record(data).history is not None
    with sqlite3.connect(path) as connection:
        connection.executescript(
            "CREATE TABLE sessions (key TEXT PRIMARY KEY, record BLOB NOT NULL,"
            " last_used_at REAL NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "INSERT INTO meta VALUES ('revision', 7), ('rows', 1);"
        )
        connection.execute("INSERT INTO sessions VALUES ('s', ?, ?)", (data, NOW))
    store = SqliteStore(path, ttl_s=60, max_sessions=10, clock=lambda: NOW, history=HISTORY)
    try:
        read = await store.get("s")
        assert np.array_equal(window_rows(read), window_rows(old), equal_nan=True)
        await store.apply("s", feeding(forecaster, policy, REQUESTS[4], HISTORY))
        after = await store.get("s")
    finally:
        await store.close()
    assert_holds_the_window_fed(after, forecaster, policy, REQUESTS[:5], HISTORY)
    assert _row(path)[1] is not None  # carried on in the ring


def _wal_frames_after(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


async def test_a_step_of_a_full_window_writes_a_few_pages_not_the_window(
    make_store: MakeStore, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """Counted in the write-ahead log: what each step's commit makes SQLite write."""
    path = tmp_path / "sessions.sqlite3"
    store = make_store(256)
    await store.apply("s", feeding(forecaster, policy, [0.1] * 300, 256))
    await store.apply("s", feeding(forecaster, policy, [0.15], 256))
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    await store.apply("s", feeding(forecaster, policy, [0.2], 256))
    # The record's page, the ring's changed rows (one page, two where they straddle pages),
    # the revision's page and the last-use index's: not the window's pages, freed and written
    # anew as a REPLACE of the row would (9 pages).
    assert _wal_frames_after(path) <= 5


# The sessions table as files before the rowid kept it (the ring column already added).
_WITHOUT_ROWID = """
CREATE TABLE old_sessions (key TEXT PRIMARY KEY, record BLOB NOT NULL, last_used_at REAL NOT NULL,
    ring BLOB) WITHOUT ROWID;
INSERT INTO old_sessions SELECT key, record, last_used_at, ring FROM sessions;
DROP TABLE sessions;
ALTER TABLE old_sessions RENAME TO sessions;
CREATE INDEX sessions_by_last_use ON sessions (last_used_at);
"""


async def test_a_file_from_before_the_rowid_is_rebuilt_with_every_session_carried_on(
    make_store: MakeStore, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    path = tmp_path / "sessions.sqlite3"
    first = make_store(HISTORY)
    for key in ("s", "t"):
        for values in REQUESTS[:3]:
            await first.apply(key, feeding(forecaster, policy, values, HISTORY))
    await first.close()
    rows = {key: _row(path, key) for key in ("s", "t")}
    with sqlite3.connect(path) as connection:
        connection.executescript(_WITHOUT_ROWID)
    again = make_store(HISTORY)
    await again.apply("s", feeding(forecaster, policy, REQUESTS[3], HISTORY))
    assert _row(path, "t") == rows["t"]  # untouched, as it was
    assert_holds_the_window_fed(await again.get("s"), forecaster, policy, REQUESTS[:4], HISTORY)
    assert await again.count() == 2
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(sessions)")]
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(sessions)")}
        (counted,) = connection.execute("SELECT value FROM meta WHERE name = 'rows'").fetchone()
    assert columns == ["id", "key", "record", "last_used_at", "ring"]
    assert "sessions_by_last_use" in indexes  # the expiry's search, rebuilt with the table
    assert counted == 2


async def test_each_step_remembers_its_record_as_a_fresh_read_decodes_it(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """The writer's memory of the rows it wrote: requests of one value and of several, a ring
    that wraps; after each, the writer's own read (from that memory) is what another process
    decodes from the file."""
    writer = make_store(HISTORY)
    for values in REQUESTS:
        await writer.apply("s", feeding(forecaster, policy, values, HISTORY))
        assert_same_record(await writer.get("s"), await make_store(HISTORY).get("s"))


async def test_a_step_another_process_wrote_is_read_from_the_file(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    first, second = make_store(HISTORY), make_store(HISTORY)
    await first.apply("s", feeding(forecaster, policy, [0.1], HISTORY))
    await second.apply("s", feeding(forecaster, policy, [0.2], HISTORY))
    await first.apply("s", feeding(forecaster, policy, [0.3], HISTORY))
    expected = fed_in_memory(forecaster, policy, [[0.1], [0.2], [0.3]], HISTORY)
    read = await make_store(HISTORY).get("s")
    assert read is not None
    assert (read.step, read.last_predictions) == (3, expected.last_predictions)
    assert np.array_equal(read.state, expected.state)


async def test_a_step_of_a_session_this_writer_wrote_decodes_nothing(
    make_store: MakeStore,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []

    def counting(data: bytes, ring: bytes | None = None) -> SessionRecord:
        decoded.append(data)
        return decode_record(data, ring)

    monkeypatch.setattr("app.stores.sqlite_decoded.decode_record", counting)
    store = make_store(HISTORY)
    for values in REQUESTS:
        await store.apply("s", feeding(forecaster, policy, values, HISTORY))
    assert decoded == []
    await make_store(HISTORY).get("s")  # another process: it decodes
    assert len(decoded) == 1
