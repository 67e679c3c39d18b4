"""Session state survives crashes, restarts and model changes; outages give 503 and heal."""

from __future__ import annotations

import concurrent.futures
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from app.forecaster import Forecaster
from app.services import ModelSlot
from app.settings import Settings
from bench.local import RedisCluster, RedisServer
from tests.helpers import asgi_client, start_uvicorn, stop, uvicorn_server, wait_until_ready

SERIES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.45, 0.15, 0.9]


def reference_forecasts(forecaster: Forecaster, values: Sequence[float]) -> list[float]:
    _state, predictions = forecaster.feed(forecaster.zero_state(), values)
    return predictions


def test_sqlite_state_survives_kill_9(
    tutorial_models_dir: Path, tmp_path: Path, forecaster: Forecaster
) -> None:
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": "sqlite",
        "FORECAST_DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "server.log"
    got = []
    server = start_uvicorn(env, log)
    try:
        wait_until_ready(server)
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for step, value in enumerate(SERIES[:7]):
                body = {"session_id": "durable", "value": value, "step": step}
                got.append(client.post("/predict", json=body).json()["prediction"])
        os.kill(server.process.pid, signal.SIGKILL)  # no shutdown, no flush: a crash
        server.process.wait()
        server = start_uvicorn(env, log)
        wait_until_ready(server)
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.get("/sessions/durable").json()["step"] == 7
            for step, value in enumerate(SERIES[7:], start=7):
                body = {"session_id": "durable", "value": value, "step": step}
                response = client.post("/predict", json=body)
                assert response.status_code == 200, response.text
                got.append(response.json()["prediction"])
    finally:
        stop(server)
    assert got == pytest.approx(reference_forecasts(forecaster, SERIES), abs=1e-12)


@pytest.mark.anyio
@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_a_new_model_rebuilds_old_sessions_from_their_window_and_says_so(
    store: str,
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    other_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    extra: dict[str, str] = {}
    if store == "redis":
        server = request.getfixturevalue("redis_server")
        extra = {"redis_url": server.url, "redis_prefix": f"model-change-{tmp_path.name}"}
    common = {"store": store, "data_dir": tmp_path / "data", **extra}
    old = Settings.model_validate({"model_dir": tutorial_models_dir, **common})
    new = Settings.model_validate({"model_dir": other_models_dir, **common})
    async with asgi_client(old, tutorial_model) as client:
        first = await client.post("/predict/batch", json={"session_id": "m", "values": [0.1, 0.2]})
        old_version = first.json()["model_version"]
    async with asgi_client(new) as client:
        response = await client.post("/predict", json={"session_id": "m", "value": 0.3, "step": 2})
        body = response.json()
        assert response.status_code == 200
        assert body["previous_model_version"] == old_version != body["model_version"]
        assert body["step"] == 3  # the count goes on, so clients' step numbers stay valid
        assert body["warmup_values"] == 2
        # The same as a fresh session of the new model fed the stored window and the value.
        await client.post("/predict/batch", json={"session_id": "fresh", "values": [0.1, 0.2]})
        fresh = await client.post("/predict", json={"session_id": "fresh", "value": 0.3})
        assert body["prediction"] == fresh.json()["prediction"]
        again = await client.post("/predict", json={"session_id": "m", "value": 0.4})
        assert again.json()["previous_model_version"] is None


@pytest.mark.anyio
async def test_redis_outage_gives_503_and_heals(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    redis.start()
    settings = Settings(model_dir=tutorial_models_dir, store="redis", redis_url=redis.url)
    try:
        async with asgi_client(settings, tutorial_model) as client:
            ok = await client.post("/predict", json={"session_id": "r", "value": 0.0, "step": 0})
            assert ok.status_code == 200
            redis.stop()
            down = await client.post("/predict", json={"session_id": "r", "value": 0.1, "step": 1})
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "store_unavailable"
            assert "Redis session store" in down.json()["error"]["message"]
            ready = await client.get("/ready")
            assert ready.status_code == 503 and ready.json()["problems"][0].startswith("store:")
            assert (await client.get("/health")).status_code == 200
            redis.start()  # same port, AOF on: the acknowledged step is still there
            assert (await client.get("/ready")).status_code == 200
            back = await client.post("/predict", json={"session_id": "r", "value": 0.1, "step": 1})
            assert back.status_code == 200 and back.json()["step"] == 2
    finally:
        redis.stop()


@pytest.mark.anyio
async def test_unusable_sqlite_folder_gives_503_and_heals(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, tmp_path: Path
) -> None:
    blocked = tmp_path / "data"
    blocked.write_text("a file where the data folder should be")
    settings = Settings(model_dir=tutorial_models_dir, store="sqlite", data_dir=blocked)
    async with asgi_client(settings, tutorial_model) as client:
        down = await client.post("/predict", json={"session_id": "q", "value": 0.0})
        assert down.status_code == 503
        assert "SQLite session file" in down.json()["error"]["message"]
        assert (await client.get("/ready")).status_code == 503
        blocked.unlink()
        assert (await client.get("/ready")).status_code == 200
        up = await client.post("/predict", json={"session_id": "q", "value": 0.0})
        assert up.status_code == 200 and up.json()["step"] == 1


@pytest.mark.parametrize("redis_fixture", ["redis_server", "redis_cluster"])
def test_two_replicas_share_sessions_through_redis(
    redis_fixture: str,
    tutorial_models_dir: Path,
    tmp_path: Path,
    forecaster: Forecaster,
    request: pytest.FixtureRequest,
) -> None:
    redis: RedisServer | RedisCluster = request.getfixturevalue(redis_fixture)
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": "redis",
        "FORECAST_REDIS_URL": redis.url,
        "FORECAST_REDIS_PREFIX": f"replicas-{tmp_path.name}",
    }
    with (
        uvicorn_server(env, tmp_path / "a.log") as first,
        uvicorn_server(env, tmp_path / "b.log") as second,
        httpx.Client(base_url=first.base_url, timeout=10) as a,
        httpx.Client(base_url=second.base_url, timeout=10) as b,
    ):
        # Alternate replicas value by value; each step is sent twice (a retry on the other one).
        got = []
        for step, value in enumerate(SERIES):
            owner, other = (a, b) if step % 2 == 0 else (b, a)
            body = {"session_id": "shared", "value": value, "step": step}
            first_try = owner.post("/predict", json=body).json()
            retry = other.post("/predict", json=body).json()
            assert retry["replayed"] is True and retry["prediction"] == first_try["prediction"]
            got.append(first_try["prediction"])
        assert got == pytest.approx(reference_forecasts(forecaster, SERIES), abs=1e-12)
        # Concurrent appends through both replicas: every step exactly once, in some order.
        values = [i / 100 for i in range(60)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(
                    lambda iv: (a if iv[0] % 2 else b).post(
                        "/predict", json={"session_id": "race", "value": iv[1]}
                    ),
                    enumerate(values),
                )
            )
        assert all(r.status_code == 200 for r in responses)
        applied = sorted(
            (r.json()["step"], v, r.json()["prediction"])
            for r, v in zip(responses, values, strict=True)
        )
        assert [step for step, _, _ in applied] == list(range(1, 61))
        expected = reference_forecasts(forecaster, [v for _, v, _ in applied])
        assert [p for _, _, p in applied] == pytest.approx(expected, abs=1e-12)


@pytest.mark.anyio
async def test_an_unreadable_stored_record_restarts_the_session_and_says_so(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, tmp_path: Path
) -> None:
    import sqlite3
    import struct

    settings = Settings(model_dir=tutorial_models_dir, store="sqlite", data_dir=tmp_path / "data")
    async with asgi_client(settings, tutorial_model) as client:
        await client.post("/predict/batch", json={"session_id": "u", "values": [0.1, 0.2]})
    with sqlite3.connect(tmp_path / "data" / "sessions.sqlite3") as connection:
        (record,) = connection.execute("SELECT record FROM sessions").fetchone()
        # As a newer release might write it: format 9, the common prefix intact.
        connection.execute("UPDATE sessions SET record = ?", (struct.pack("<B", 9) + record[1:],))
    async with asgi_client(settings, tutorial_model) as client:
        response = await client.post("/predict", json={"session_id": "u", "value": 0.3, "step": 2})
        fresh = await client.post("/predict", json={"session_id": "fresh", "value": 0.3})
    assert response.status_code == 200
    assert response.json()["previous_model_version"] == "unreadable record (format 9)"
    assert response.json()["step"] == 3
    assert response.json()["prediction"] == fresh.json()["prediction"]
