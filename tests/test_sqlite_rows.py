"""The SQLite store's sessions stepped in place (app.stores.cached_rows, app.stores.row_codec)
write the file exactly as the record path does, and trust a row only while the file agrees."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from app.errors import StoreUnavailable
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.services import ModelSlot
from app.session_rows import SessionRows
from app.session_rules import SessionRecord, feed
from app.settings import Settings
from app.stores import sqlite as sqlite_module
from app.stores.cached_rows import CachedRows
from app.stores.record_codec import decode_record, encode_record
from app.stores.row_codec import rows_records, rows_rings
from app.stores.sqlite import SqliteStore
from app.window_ring import RingWindow, ring_bytes, ring_slots
from tests.helpers import Clock, assert_same_record, comparable_record
from tests.test_session_rows import difference_of, in_place_client

pytestmark = pytest.mark.anyio

CAPACITY = 5
MakeStore = Callable[..., SqliteStore]


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Stores on one session file (each as another process would hold it), on ``clock``."""
    opened: list[SqliteStore] = []

    def make(clock: Clock, history: int = CAPACITY, ttl_s: float = 60.0) -> SqliteStore:
        store = SqliteStore(
            tmp_path / "sessions.sqlite3",
            ttl_s=ttl_s,
            max_sessions=1000,
            clock=clock,
            history=history,
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def fed(
    record: SessionRecord | None,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    value: float,
    now: float,
    capacity: int = CAPACITY,
) -> SessionRecord:
    """The record the record path computes after ``value``."""
    new, _ = feed(record, forecaster, policy, [value], None, now, history=capacity)
    assert new is not None
    return new


async def put(store: SqliteStore, key: str, record: SessionRecord) -> None:
    """Write ``record`` as the session's, through the record path."""

    def write(_old: SessionRecord | None) -> tuple[SessionRecord, None]:
        return record, None

    await store.apply(key, write)


async def read(store: SqliteStore, key: str) -> SessionRecord:
    """The session's record as the file holds it, its window as rows and its revision 0 (the
    record path's revisions are the store's, not the rules')."""
    return comparable_record(await store.get(key))


async def in_place(
    store: SqliteStore,
    keys: list[str],
    values: list[float],
    forecaster: Forecaster,
    policy: IntervalPolicy,
    now: float,
    steps: list[int | None] | None = None,
) -> list[int]:
    """Feed the sessions in place; the positions of those stepped so."""
    stepped = await store.feed_in_place(
        keys, values, steps or [None] * len(keys), forecaster, policy, CAPACITY, now
    )
    return stepped.indexes


async def a_row_session(
    store: SqliteStore, forecaster: Forecaster, policy: IntervalPolicy, now: float
) -> SessionRecord:
    """Session "s", created by the record path and then stepped in place (a row now); the
    record the file holds after both."""
    record = fed(None, forecaster, policy, 0.3, now)
    await put(store, "s", record)
    assert await in_place(store, ["s"], [0.4], forecaster, policy, now) == [0]
    return fed(record, forecaster, policy, 0.4, now)


@pytest.mark.parametrize("capacity", [0, 1, 3, 40], ids=lambda c: f"window-{c}")
@pytest.mark.parametrize(
    ("transform", "calibrated"),
    [("level", True), ("difference", True), ("level", False)],
    ids=["level", "difference", "level-uncalibrated"],
)
def test_rows_are_encoded_as_their_records(
    forecaster: Forecaster,
    policy: IntervalPolicy,
    capacity: int,
    transform: str,
    calibrated: bool,
) -> None:
    served = forecaster if transform == "level" else difference_of(forecaster, 0.7)
    if not calibrated:
        policy = IntervalPolicy.build(None, (80, 95), rate=0.05, window=50)
    rows = SessionRows(served, policy, capacity, 100)
    rng = random.Random(5)
    records: list[SessionRecord] = []
    for _ in range(12):  # windows of every fill, from one row to full and wrapped
        record = fed(None, served, policy, rng.random(), 1.0, capacity)
        for _ in range(rng.randrange(60)):
            record = fed(record, served, policy, rng.random(), 1.0, capacity)
        records.append(record)
    adopted = [rows.adopt(record) for record in records]
    assert None not in adopted
    chosen = np.array(adopted, dtype=np.int64)
    for round_number in range(50):
        now = 2.0 + round_number
        values = [rng.uniform(-0.5, 1.5) for _ in records]
        rows.step(list(range(len(records))), chosen.tolist(), values, now)
        revisions = rng.sample(range(10**6), len(records))
        data = rows_records(rows, chosen, np.array(revisions, dtype=np.int64))
        rings = rows_rings(rows, chosen)
        for index, value in enumerate(values):
            records[index] = fed(records[index], served, policy, value, now, capacity)
            record = records[index].with_revision(revisions[index])
            assert data[index] == encode_record(record, window_apart=True)
            decoded = decode_record(data[index], rings[index])
            if capacity:
                assert isinstance(decoded.history, RingWindow)
                assert_same_record(decoded.with_history(decoded.history.array()), record)
            else:
                assert rings[index] is None
                assert_same_record(decoded, record)


async def test_steps_in_place_write_what_the_record_path_writes(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    clock = Clock()
    store = make_store(clock)
    rng = random.Random(9)
    keys = [f"ns/s{index}" for index in range(30)]
    expected: dict[str, SessionRecord] = {}
    for key in keys:  # created by the record path
        expected[key] = fed(None, forecaster, policy, rng.random(), clock.now)
        await put(store, key, expected[key])
    for round_number in range(25):
        clock.advance(1.0)
        chosen = rng.sample(keys, 20)
        values = [rng.uniform(-0.5, 1.5) for _ in chosen]
        assert await in_place(store, chosen, values, forecaster, policy, clock.now) == list(
            range(20)
        )
        for key, value in zip(chosen, values, strict=True):
            expected[key] = fed(expected[key], forecaster, policy, value, clock.now)
        if round_number % 5 == 2:  # the record path steps some too: their rows are stale
            for key in rng.sample(keys, 5):
                expected[key] = fed(expected[key], forecaster, policy, 0.5, clock.now)
                await put(store, key, expected[key])
    assert store.rows_in_use() > 0
    for key in keys:
        assert_same_record(await read(store, key), expected[key].with_revision(0))


async def test_a_step_in_place_of_a_full_window_writes_a_few_pages(
    make_store: MakeStore, tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    """The ring written keeps every unchanged row's bytes where they were (as the record
    path's two-row patch does), so SQLite writes the pages of the step's rows only."""
    path = tmp_path / "sessions.sqlite3"
    clock = Clock()
    store = make_store(clock, history=256)
    record = None
    for _ in range(300):
        record = fed(record, forecaster, policy, 0.1, clock.now, 256)
    assert record is not None
    await put(store, "s", record)
    for value in (0.15, 0.2):  # adopted at the first, a row already at the second
        stepped = await store.feed_in_place(
            ["s"], [value], [None], forecaster, policy, 256, clock.now
        )
        assert stepped.indexes == [0]
        if value == 0.15:
            with sqlite3.connect(path) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with sqlite3.connect(path) as connection:
        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames <= 5  # as the record path's step (tests/test_sqlite_window.py)


async def test_another_connection_s_write_drops_the_rows(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    clock = Clock()
    mine, other = make_store(clock), make_store(clock)
    record = await a_row_session(mine, forecaster, policy, clock.now)
    record = fed(record, forecaster, policy, 0.9, clock.now)
    await put(other, "s", record)  # another process steps the session
    assert await in_place(mine, ["s"], [0.5], forecaster, policy, clock.now) == [0]
    record = fed(record, forecaster, policy, 0.5, clock.now)
    assert_same_record(await read(mine, "s"), record.with_revision(0))


async def test_a_rolled_back_step_in_place_is_not_kept(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    clock = Clock()
    store = make_store(clock)
    record = await a_row_session(store, forecaster, policy, clock.now)

    def refuse_updates(connection: sqlite3.Connection, _now: float) -> None:
        # On the store's own connection: the file's data version does not change.
        connection.execute(
            "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON sessions"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )

    await store._submit(refuse_updates)
    with pytest.raises(StoreUnavailable):
        await in_place(store, ["s"], [0.6], forecaster, policy, clock.now)
    # The connection was dropped with its trigger; the failed step is in neither the file
    # nor the rows.
    assert store.rows_in_use() == 0
    assert await in_place(store, ["s"], [0.5], forecaster, policy, clock.now) == [0]
    record = fed(record, forecaster, policy, 0.5, clock.now)
    assert_same_record(await read(store, "s"), record.with_revision(0))


async def test_a_row_whose_file_row_is_gone_fails_its_step(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    clock = Clock()
    store = make_store(clock)
    await a_row_session(store, forecaster, policy, clock.now)

    def delete_behind_the_store(connection: sqlite3.Connection, _now: float) -> None:
        connection.execute("DELETE FROM sessions WHERE key = 's'")

    await store._submit(delete_behind_the_store)
    with pytest.raises(StoreUnavailable):
        await in_place(store, ["s"], [0.6], forecaster, policy, clock.now)
    assert store.rows_in_use() == 0


async def test_an_expired_row_is_left_to_the_record_path(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    clock = Clock()
    store = make_store(clock, ttl_s=10.0)
    await a_row_session(store, forecaster, policy, clock.now)
    clock.advance(10.5)
    assert await in_place(store, ["s"], [0.5], forecaster, policy, clock.now) == []
    assert await store.get("s") is None
    assert store.rows_in_use() == 0


async def test_a_deleted_session_leaves_the_rows(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    clock = Clock()
    store = make_store(clock)
    await a_row_session(store, forecaster, policy, clock.now)
    assert await store.delete("s")
    assert store.rows_in_use() == 0
    assert await in_place(store, ["s"], [0.5], forecaster, policy, clock.now) == []


async def test_retries_conflicts_and_new_sessions_are_left_to_the_record_path(
    make_store: MakeStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    clock = Clock()
    store = make_store(clock)
    record = fed(None, forecaster, policy, 0.3, clock.now)
    await put(store, "s", record)
    other_model = fed(None, forecaster, policy, 0.3, clock.now)._replace(model_version="other")
    await put(store, "t", other_model)
    stepped = await in_place(
        store, ["new", "s", "t"], [0.1, 0.2, 0.3], forecaster, policy, clock.now, [None, 1, None]
    )
    assert stepped == [1]
    for step in (1, 5):  # a resend of step 1's value, and a step ahead of the session's
        assert await in_place(store, ["s"], [0.2], forecaster, policy, clock.now, [step]) == []
    assert await store.get("new") is None


async def test_rows_beyond_the_limit_leave_the_others_to_the_record_path(
    make_store: MakeStore,
    forecaster: Forecaster,
    policy: IntervalPolicy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_module, "CACHED_ROWS_LIMIT", 3)
    clock = Clock()
    store = make_store(clock)
    keys = [f"s{index}" for index in range(5)]
    expected = {key: fed(None, forecaster, policy, 0.3, clock.now) for key in keys}
    for key in keys:
        await put(store, key, expected[key])
    assert await in_place(store, keys, [0.1] * 5, forecaster, policy, clock.now) == [0, 1, 2]
    assert await in_place(store, keys[3:], [0.2] * 2, forecaster, policy, clock.now) == [0, 1]
    assert store.rows_in_use() == 3  # the least recently used dropped
    for key in keys[:3]:
        expected[key] = fed(expected[key], forecaster, policy, 0.1, clock.now)
    for key in keys[3:]:
        expected[key] = fed(expected[key], forecaster, policy, 0.2, clock.now)
    for key in keys:
        assert_same_record(await read(store, key), expected[key].with_revision(0))


def test_a_reused_row_writes_no_trace_of_its_last_session(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    capacity = 40
    rows = SessionRows(forecaster, policy, capacity, 10)
    before = fed(None, forecaster, policy, 0.9, 1.0, capacity)
    for _ in range(60):  # a full window of values far from the next session's
        before = fed(before, forecaster, policy, 0.9, 1.0, capacity)
    row = rows.adopt(before)
    assert row is not None
    rows.release(row)
    after = fed(None, forecaster, policy, 0.1, 1.0, capacity)
    assert rows.adopt(after) == row  # the same row again
    rows.step([0], [row], [0.2], 2.0)
    after = fed(after, forecaster, policy, 0.2, 2.0, capacity)
    window = after.history
    assert isinstance(window, np.ndarray)
    (ring,) = rows_rings(rows, np.array([row]))
    # Byte for byte the ring a store writes for this window alone (zeros outside it).
    assert ring == ring_bytes(window, after.step, ring_slots(capacity, window.shape[0]))


async def test_a_failed_second_transaction_refuses_only_its_items(
    tmp_path: Path, tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    """Sessions stepped in place commit before the others' transaction: when that one fails,
    the answers say which items applied."""
    store = SqliteStore(
        tmp_path / "sessions.sqlite3",
        ttl_s=3600,
        max_sessions=100,
        history=Settings.model_fields["session_history"].default,
    )

    def refuse_inserts(connection: sqlite3.Connection, _now: float) -> None:
        connection.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON sessions"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )

    async with in_place_client(tutorial_models_dir, tutorial_model, store) as client:
        await client.post("/predict/many", json={"items": [{"session_id": "a", "value": 0.1}]})
        await client.post("/predict/many", json={"items": [{"session_id": "a", "value": 0.2}]})
        assert store.rows_in_use() == 1
        await store._submit(refuse_inserts)
        items = [{"session_id": "a", "value": 0.3}, {"session_id": "b", "value": 0.4}]
        response = await client.post("/predict/many", json={"items": items})
        applied, refused = response.json()["results"]
        assert applied["step"] == 3
        assert refused["error"]["code"] == "store_unavailable"
        assert (await client.get("/sessions/a")).json()["step"] == 3
        assert (await client.get("/sessions/b")).status_code == 404


def test_rows_emptied_within_a_request_stay_the_rows_in_use(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    cached = CachedRows(10)
    rows = cached.rows_of(forecaster, policy, CAPACITY, 100)
    record = fed(None, forecaster, policy, 0.3, 1.0)
    assert cached.adopt("a", 1, record, rows, ()) is not None
    cached.forget("a")  # say it expired: the rows hold nobody now
    assert cached.adopt("b", 2, record, rows, ()) is not None
    assert cached.rows_of(forecaster, policy, CAPACITY, 100) is rows  # "b" is not stranded
