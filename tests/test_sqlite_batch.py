"""The SQLite store's ``apply_many``: the sessions read by one statement per chunk of keys, the
steps of existing sessions written together, each answered as its own ``apply`` would be."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.stores.sqlite import SqliteStore
from tests.test_apply_many import feeding, steps

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "s.sqlite3", ttl_s=60, max_sessions=2_000)
    yield store
    await store.close()


async def test_a_batch_reads_its_sessions_in_one_statement(
    store: SqliteStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    keys = ["ns/a", "ns/b", "ns/c"]
    await store.apply_many([(key, feeding(forecaster, policy, 0.0)) for key in keys])
    statements: list[str] = []

    def traced(connection: sqlite3.Connection, _now: float) -> None:
        connection.set_trace_callback(statements.append)

    await store._submit(traced)  # the writer thread's own connection
    results = await store.apply_many([(key, feeding(forecaster, policy, 0.1)) for key in keys])
    assert steps(results) == [2, 2, 2]
    reads = [sql for sql in statements if sql.startswith("SELECT key, id, record, ring")]
    assert len(reads) == 1


async def test_more_keys_than_one_read_takes_are_all_applied(
    store: SqliteStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    keys = [f"ns/s{index}" for index in range(1_234)]
    first = await store.apply_many([(key, feeding(forecaster, policy, 0.0)) for key in keys])
    again = await store.apply_many([(key, feeding(forecaster, policy, 0.1)) for key in keys])
    assert set(steps(first)) == {1}
    assert set(steps(again)) == {2}
    assert await store.count() == len(keys)


async def test_a_conflict_in_a_batch_leaves_its_session_and_writes_the_others(
    store: SqliteStore, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    await store.apply_many([(key, feeding(forecaster, policy, 0.0)) for key in ("ns/a", "ns/b")])
    results = await store.apply_many(
        [
            ("ns/a", feeding(forecaster, policy, 0.1, step=5)),
            ("ns/b", feeding(forecaster, policy, 0.1, step=1)),
        ]
    )
    assert steps(results) == ["step_conflict", 2]
    a, b = await store.get("ns/a"), await store.get("ns/b")
    assert a is not None and a.step == 1 and a.last_values == (0.0,)
    assert b is not None and b.step == 2 and b.last_values == (0.1,)


async def test_a_refusal_after_an_update_in_a_batch_keeps_the_update(
    tmp_path: Path, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3", ttl_s=60, max_sessions=1)
    try:
        await store.apply("ns/a", feeding(forecaster, policy, 0.0))
        results = await store.apply_many(
            [
                ("ns/a", feeding(forecaster, policy, 0.1)),  # its update waits for the end
                ("ns/b", feeding(forecaster, policy, 0.1)),  # over the cap: refused
            ]
        )
        assert steps(results) == [2, "session_limit_reached"]
        a = await store.get("ns/a")
        assert a is not None and a.step == 2 and a.last_values == (0.1,)
        assert await store.count() == 1
    finally:
        await store.close()
