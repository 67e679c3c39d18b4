"""The SQLite store deletes expired sessions as it goes: its file stops growing (fake clock)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.errors import SessionLimitReached
from app.session_rules import SessionRecord
from app.stores.sqlite import SqliteStore
from tests.helpers import Clock

pytestmark = pytest.mark.anyio

TTL_S = 60


def record_at(now: float) -> SessionRecord:
    return SessionRecord(np.zeros(20), 1, 0, "m", now, now)


async def create(store: SqliteStore, clock: Clock, keys: list[str]) -> None:
    """New sessions, concurrently (so the writer groups them as under load)."""
    await asyncio.gather(
        *(store.apply(key, lambda _record: (record_at(clock()), None)) for key in keys)
    )


def rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])


def database_pages(path: Path) -> int:
    """Pages of the database once the write-ahead log is folded into it."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(connection.execute("PRAGMA page_count").fetchone()[0])


@pytest.fixture
async def store_and_clock(tmp_path: Path):
    clock = Clock()
    store = await SqliteStore.open(
        tmp_path / "sessions.sqlite3", ttl_s=TTL_S, max_sessions=10_000, clock=clock
    )
    yield store, clock
    await store.close()


async def test_expired_sessions_are_deleted_by_later_writes(store_and_clock) -> None:
    store, clock = store_and_clock
    await create(store, clock, [f"old-{i}" for i in range(600)])
    clock.advance(TTL_S + 1)
    for index in range(3):  # each commit deletes one batch (256) of the oldest expired
        await create(store, clock, [f"new-{index}"])
    assert rows(store.path) == 3
    assert await store.count() == 3


async def test_the_file_stops_growing_when_sessions_come_and_expire(store_and_clock) -> None:
    store, clock = store_and_clock
    sizes = []
    for generation in range(8):
        await create(store, clock, [f"g{generation}-{i}" for i in range(400)])
        clock.advance(TTL_S + 1)
        sizes.append(database_pages(store.path))
    assert rows(store.path) <= 400 + 256
    print("database pages after each generation:", sizes)
    assert sizes[-1] <= sizes[2]  # freed pages are reused: no growth after the first rounds


async def test_live_count_leaves_out_expired_sessions(store_and_clock) -> None:
    store, clock = store_and_clock
    await create(store, clock, ["a", "b"])
    clock.advance(TTL_S / 2)
    await create(store, clock, ["c"])
    clock.advance(TTL_S / 2 + 1)  # a and b expired, c alive; nothing written since
    assert await store.count() == 1


async def test_at_the_cap_expired_sessions_make_room(tmp_path: Path) -> None:
    clock = Clock()
    store = await SqliteStore.open(
        tmp_path / "capped.sqlite3", ttl_s=TTL_S, max_sessions=2, clock=clock
    )
    try:
        await create(store, clock, ["a", "b"])
        with pytest.raises(SessionLimitReached):
            await create(store, clock, ["c"])
        clock.advance(TTL_S + 1)
        await create(store, clock, ["c", "d"])
        assert await store.count() == 2
    finally:
        await store.close()


async def test_a_file_from_before_the_row_count_is_counted_on_opening(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "old.sqlite3"
    store = await SqliteStore.open(path, ttl_s=TTL_S, max_sessions=3, clock=clock)
    await create(store, clock, ["a", "b"])
    await store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM meta WHERE name = 'rows'")  # as the older code left it
    reopened = await SqliteStore.open(path, ttl_s=TTL_S, max_sessions=3, clock=clock)
    try:
        await create(reopened, clock, ["c"])
        with pytest.raises(SessionLimitReached):
            await create(reopened, clock, ["d"])
    finally:
        await reopened.close()
