"""The in-place rows (app.session_rows) step sessions exactly as the records do: the memory
store's, and through the app the SQLite and Redis stores' too (tests/test_sqlite_rows.py,
tests/test_redis_rows.py: their own)."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from app import session_rows
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.main import create_app
from app.metrics import ForecastStats
from app.services import ModelSlot
from app.session_rows import step_rows_signatures
from app.session_rules import FeedOutcome, SessionRecord, feed
from app.settings import Settings
from app.stores.memory import MemoryStore
from app.stores.redis import RedisStore
from app.stores.sqlite import SqliteStore
from forecast_core.session_step import SessionStep
from forecast_core.transform import Transform
from tests.helpers import assert_same_record

pytestmark = pytest.mark.anyio

NOW = 1_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def difference_of(forecaster: Forecaster, shrink: float) -> Forecaster:
    """The same network served as a difference model."""
    step = forecaster.step
    return Forecaster(
        SessionStep(step.weights, Transform.difference(shrink), step.scaling), forecaster.manifest
    )


async def put(store: MemoryStore, key: str, record: SessionRecord) -> None:
    """Write ``record`` as the session's, through the store's one write path."""

    def write(_old: SessionRecord | None) -> tuple[SessionRecord, None]:
        return record, None

    await store.apply(key, write)


async def fed_by_records(
    forecaster: Forecaster,
    policy: IntervalPolicy,
    capacity: int,
    record: SessionRecord | None,
    value: float,
    now: float,
) -> tuple[SessionRecord, FeedOutcome]:
    new, outcome = feed(record, forecaster, policy, [value], None, now, history=capacity)
    assert new is not None
    return new, outcome


async def one_row_session(
    forecaster: Forecaster, policy: IntervalPolicy, key: str = "ns:k", clock: Clock | None = None
) -> tuple[MemoryStore, SessionRecord]:
    """A store whose one session was created (a record) and then stepped in place (a row);
    also the record the record path would hold after both values."""
    store = MemoryStore(ttl_s=10, max_sessions=10, clock=clock or Clock())
    record, _ = await fed_by_records(forecaster, policy, 5, None, 0.3, NOW)
    await put(store, key, record)
    assert (
        await store.feed_in_place([key], [0.1], [None], forecaster, policy, 5, NOW)
    ).indexes == [0]
    expected, _ = await fed_by_records(forecaster, policy, 5, record, 0.1, NOW)
    return store, expected


@pytest.mark.parametrize("capacity", [0, 1, 3, 40], ids=lambda c: f"window-{c}")
@pytest.mark.parametrize(
    ("transform", "calibrated"),
    [("level", True), ("difference", True), ("level", False)],
    ids=["level", "difference", "level-uncalibrated"],
)
async def test_rows_step_as_records_do(
    forecaster: Forecaster,
    policy: IntervalPolicy,
    capacity: int,
    transform: str,
    calibrated: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session_rows, "_ALLOCATED_AT_ONCE", 0)  # 64 rows, then doubled twice
    served = forecaster if transform == "level" else difference_of(forecaster, 0.7)
    if not calibrated:  # no intervals: no levels to adapt
        policy = IntervalPolicy.build(None, (80, 95), rate=0.05, window=50)
    clock = Clock()
    store = MemoryStore(ttl_s=1e9, max_sessions=1000, clock=clock)
    keys = [f"ns:s{index}:default" for index in range(150)]  # past the first 64 rows
    expected: dict[str, SessionRecord] = {}
    rng = random.Random(7)
    for key in keys:  # a new session takes the record path: created by apply
        record, _ = await fed_by_records(served, policy, capacity, None, rng.uniform(0, 1), NOW)
        await put(store, key, record)
        expected[key] = record
    for round_number in range(60):
        clock.now += 1.0
        chosen = rng.sample(keys, 100)
        values = [rng.uniform(-0.5, 1.5) for _ in chosen]
        stepped = await store.feed_in_place(
            chosen, values, [None] * len(chosen), served, policy, capacity, clock.now
        )
        assert stepped.indexes == list(range(len(chosen)))
        for position, (key, value) in enumerate(zip(chosen, values, strict=True)):
            record, outcome = await fed_by_records(
                served, policy, capacity, expected[key], value, clock.now
            )
            expected[key] = record
            assert stepped.predictions[position] == outcome.predictions[0]
            assert stepped.steps[position] == outcome.step
            assert tuple(stepped.offsets[position]) == outcome.offsets
            assert (stepped.misses[position],) == outcome.misses
            (error,) = outcome.errors  # NaN where no forecast preceded
            in_place = stepped.errors[position]
            assert in_place == error or (math.isnan(in_place) and math.isnan(error))
            assert stepped.intervals[position] == policy.intervals(
                outcome.predictions[0], outcome.offsets
            )
        if round_number % 7 == 3:  # some sessions back to records, adopted again next time
            for key in rng.sample(keys, 20):
                got = await store.get(key)
                assert got is not None
                assert_same_record(got, expected[key])
    for key in keys:
        got = await store.get(key)
        assert got is not None
        assert_same_record(got, expected[key])
    assert step_rows_signatures() == 1  # serving compiled nothing more (no stall on a request)


async def test_a_fresh_record_is_adopted_with_no_last_value(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = MemoryStore(ttl_s=1e9, max_sessions=10, clock=Clock())
    fresh = SessionRecord(forecaster.zero_state(), 0, 0, forecaster.version, NOW, NOW)
    await put(store, "k", fresh)
    stepped = await store.feed_in_place(["k"], [0.4], [0], forecaster, policy, 5, NOW)
    expected, outcome = await fed_by_records(forecaster, policy, 5, fresh, 0.4, NOW)
    assert stepped.predictions == outcome.predictions
    assert math.isnan(stepped.errors[0])
    got = await store.get("k")
    assert got is not None
    assert_same_record(got, expected)


async def test_sessions_the_rows_cannot_take_are_left_out(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = MemoryStore(ttl_s=1e9, max_sessions=10, clock=Clock())
    record, _ = await fed_by_records(forecaster, policy, 5, None, 0.3, NOW)
    other_model = record._replace(model_version="another")
    for key, kept in (("current", record), ("other-model", other_model)):
        await put(store, key, kept)
    stepped = await store.feed_in_place(
        ["unknown", "other-model", "current"],
        [0.1, 0.2, 0.3],
        [None, None, 1],
        forecaster,
        policy,
        5,
        NOW,
    )
    assert stepped.indexes == [2]
    assert await store.get("unknown") is None
    assert await store.get("other-model") == other_model
    retry = await store.feed_in_place(["current"], [0.3], [1], forecaster, policy, 5, NOW)
    assert retry.indexes == []  # a resend (step 1 again): the record path replays it


async def test_a_window_of_other_levels_is_left_to_the_records(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = MemoryStore(ttl_s=1e9, max_sessions=10, clock=Clock())
    record, _ = await fed_by_records(forecaster, policy, 5, None, 0.3, NOW)
    assert isinstance(record.history, np.ndarray)
    narrow = record.with_history(record.history[:, :2])
    await put(store, "k", narrow)
    assert (
        await store.feed_in_place(["k"], [0.1], [None], forecaster, policy, 5, NOW)
    ).indexes == []


async def test_a_row_session_expires(forecaster: Forecaster, policy: IntervalPolicy) -> None:
    clock = Clock()
    store, _ = await one_row_session(forecaster, policy, clock=clock)
    clock.now = NOW + 9.5  # 9.5 s after its last use: alive
    assert await store.count() == 1
    clock.now = NOW + 10.5
    assert await store.count() == 0
    assert await store.get("ns:k") is None
    assert store.rows_in_use() == 0


async def test_deleting_a_row_session_frees_its_rows(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store, _ = await one_row_session(forecaster, policy)
    assert store.rows_in_use() == 1
    assert await store.delete("ns:k")
    assert store.rows_in_use() == 0
    assert await store.namespace_counts() == {}


async def test_a_listed_row_session_shows_its_record(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store, expected = await one_row_session(forecaster, policy)
    page, cursor = await store.list_page("ns:", None, 10)
    assert cursor is None
    assert [key for key, _ in page] == ["ns:k"]
    assert_same_record(page[0][1], expected)


async def test_a_new_model_takes_the_sessions_back_to_records(
    forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store, expected = await one_row_session(forecaster, policy)
    newer = Forecaster(
        forecaster.step,
        forecaster.manifest.model_copy(update={"version": forecaster.version + "-new"}),
    )
    assert (await store.feed_in_place(["ns:k"], [0.2], [None], newer, policy, 5, NOW)).indexes == []
    got = await store.get("ns:k")
    assert got is not None
    assert_same_record(got, expected)
    assert store.rows_in_use() == 0


def test_many_observations_count_as_one_at_a_time() -> None:
    one_by_one, at_once = ForecastStats(), ForecastStats()
    rng = random.Random(3)
    errors = [math.nan, *(rng.choice([0.001, 0.0005, 0.02, 5.0, rng.random()]) for _ in range(99))]
    misses = [rng.randrange(4) for _ in errors]
    flags = [rng.choice([[], ["outside_interval_95"], ["outside_training_range"]]) for _ in errors]
    levels = ("80", "95")
    for error, missed, value_flags in zip(errors, misses, flags, strict=True):
        if not math.isnan(error):
            one_by_one.observe(error, missed, levels, value_flags)
    at_once.observe_many(errors, misses, levels, flags)
    assert [list(family.samples) for family in at_once.collect()] == [
        list(family.samples) for family in one_by_one.collect()
    ]


def test_intervals_from_bounds_are_those_from_offsets(policy: IntervalPolicy) -> None:
    rng = np.random.default_rng(5)
    expected = [
        policy.intervals(forecast, offsets)
        for forecast, offsets in zip(
            rng.normal(0, 1, 20).tolist(), rng.normal(0, 1, (20, 2)).tolist(), strict=True
        )
    ]
    lower = np.array([[interval["lower"] for interval in row] for row in expected])
    upper = np.array([[interval["upper"] for interval in row] for row in expected])
    assert policy.intervals_of_bounds(lower, upper) == expected


@asynccontextmanager
async def in_place_client(
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    store: MemoryStore | SqliteStore | RedisStore,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on ``store``, behind httpx's ASGI transport; an SQLite or Redis store closed
    after."""
    kind: Literal["memory", "sqlite", "redis"] = (
        "sqlite"
        if isinstance(store, SqliteStore)
        else "redis"
        if isinstance(store, RedisStore)
        else "memory"
    )
    settings = Settings(model_dir=tutorial_models_dir, store=kind)
    app = create_app(settings, model=tutorial_model, store=store, clock=clock)
    try:
        async with LifespanManager(app, startup_timeout=120) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
    finally:
        if isinstance(store, SqliteStore | RedisStore):
            await store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
@pytest.mark.parametrize("levels", [None, [50, 99]], ids=["adapted-levels", "asked-levels"])
async def test_in_place_answers_are_those_of_predict(
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    levels: list[int] | None,
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    clock = Clock()
    history = Settings.model_fields["session_history"].default
    store: MemoryStore | SqliteStore | RedisStore
    if kind == "memory":
        store = MemoryStore(ttl_s=3600, max_sessions=1000, clock=clock)
    elif kind == "sqlite":
        store = SqliteStore(
            tmp_path / "sessions.sqlite3",
            ttl_s=3600,
            max_sessions=1000,
            clock=clock,
            history=history,
        )
    else:
        redis = request.getfixturevalue("redis_server")
        prefix = f"twins-{tmp_path.name}"
        store = RedisStore(
            redis.url, prefix=prefix, ttl_s=3600, max_sessions=1000, clock=clock, history=history
        )
    asked = {"levels": levels} if levels else {}
    rng = random.Random(11)
    sessions = [f"s{index}" for index in range(20)]
    async with in_place_client(tutorial_models_dir, tutorial_model, store, clock) as client:
        for _ in range(12):
            clock.now += 1.0
            values = [rng.uniform(-0.2, 1.2) for _ in sessions]
            pairs = list(zip(sessions, values, strict=True))
            items = [{"session_id": s, "value": v} for s, v in pairs]
            response = await client.post("/predict/many", json={"items": items, **asked})
            twins = [
                await client.post("/predict", json={"session_id": f"twin-{s}", "value": v, **asked})
                for s, v in pairs
            ]
            assert response.json()["results"] == [
                {**twin.json(), "session_id": session}
                for twin, session in zip(twins, sessions, strict=True)
            ]
        assert store.rows_in_use() == len(sessions)  # the path under test was taken
        for session in sessions:
            for path in ("/sessions/{}", "/sessions/{}/history"):
                own = (await client.get(path.format(session))).json()
                twin = (await client.get(path.format(f"twin-{session}"))).json()
                assert {**own, "session_id": None} == {**twin, "session_id": None}


def test_until_the_step_is_compiled_requests_take_the_record_path(
    tutorial_models_dir: Path,
) -> None:
    # In a process of its own: this one compiled the step up front (conftest).
    script = f"""
import asyncio
from pathlib import Path
from forecast_core.artifact import load_artifact
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_rules import feed
from app.stores.memory import MemoryStore
from app.stores.redis import RedisStore
from app.stores.sqlite import SqliteStore

artifact = load_artifact(Path({str(tutorial_models_dir)!r}))
forecaster = Forecaster(artifact.session_step(), artifact.manifest)
policy = IntervalPolicy.build(forecaster.calibration, (80, 95), rate=0.05, window=50)
store = MemoryStore(ttl_s=60, max_sessions=10, clock=lambda: 0.0)
record, _ = feed(None, forecaster, policy, [0.3], None, 0.0, history=5)
asyncio.run(store.apply("k", lambda _old: (record, None)))
before = asyncio.run(store.feed_in_place(["k"], [0.1], [None], forecaster, policy, 5, 0.0))
store._compiling.join()
after = asyncio.run(store.feed_in_place(["k"], [0.1], [None], forecaster, policy, 5, 0.0))
print(before.indexes, after.indexes)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "[] [0]"


async def test_new_sessions_beside_in_place_ones_are_created_in_request_order(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    store = MemoryStore(ttl_s=3600, max_sessions=2)
    async with in_place_client(tutorial_models_dir, tutorial_model, store) as client:
        await client.post("/predict/many", json={"items": [{"session_id": "x", "value": 0.1}]})
        items = [("x", 0.2), ("a", 0.3), ("b", 0.4), ("b", 0.5)]
        response = await client.post(
            "/predict/many", json={"items": [{"session_id": s, "value": v} for s, v in items]}
        )
        assert store.rows_in_use() == 1  # x, stepped in place
        codes = [result.get("error", {}).get("code") for result in response.json()["results"]]
        assert codes == [None, None, "session_limit_reached", "session_limit_reached"]


async def test_a_resent_in_place_request_is_replayed(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    store = MemoryStore(ttl_s=3600, max_sessions=10)
    async with in_place_client(tutorial_models_dir, tutorial_model, store) as client:
        first = [{"session_id": s, "value": 0.1, "step": 0} for s in ("a", "b")]
        await client.post("/predict/many", json={"items": first})
        body = {"items": [{"session_id": s, "value": 0.2, "step": 1} for s in ("a", "b")]}
        applied = (await client.post("/predict/many", json=body)).json()["results"]
        assert store.rows_in_use() == 2
        again = await client.post("/predict/many", json=body)
        assert again.status_code == 200
        assert again.json()["results"] == [{**answer, "replayed": True} for answer in applied]
        conflict = {"items": [{"session_id": "a", "value": 0.3, "step": 7}]}
        refused = (await client.post("/predict/many", json=conflict)).json()["results"][0]
        assert refused["error"]["code"] == "step_conflict"
        assert refused["error"]["details"]["expected_step"] == 2
