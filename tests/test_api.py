"""The HTTP API through httpx's ASGI transport, with the lifespan running the real model."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.settings import Settings
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio


STORES = ["memory", "sqlite", "redis"]


def store_settings(store: str, models: Path, tmp_path: Path, request, **overrides) -> Settings:
    """Settings for one store; a Redis store gets its own key prefix on the shared test server."""
    extra = {}
    if store == "redis":
        redis_server = request.getfixturevalue("redis_server")
        extra = {"redis_url": redis_server.url, "redis_prefix": f"test-{tmp_path.name}-{store}"}
    fields = {"model_dir": models, "store": store, "data_dir": tmp_path / store}
    return Settings.model_validate({**fields, **extra, **overrides})


@pytest.fixture(params=STORES)
def settings(request, tutorial_models_dir: Path, tmp_path: Path) -> Settings:
    return store_settings(request.param, tutorial_models_dir, tmp_path, request)


async def test_tutorial_walk_through_then_reset_and_again(settings, forecaster):
    async with asgi_client(settings) as client:
        for _round in range(2):
            for i in range(9):
                response = await client.post("/predict", json={"session_id": "s1", "value": i / 10})
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["step"] == i + 1
                assert round(body["prediction"], 1) == round((i + 1) / 10, 1)
                assert body["model_version"] == forecaster.version
            reset = await client.post("/reset", json={"session_id": "s1"})
            assert reset.json() == {"session_id": "s1", "step": 0}


async def test_step_protocol_applies_replays_and_conflicts(settings):
    async with asgi_client(settings) as client:
        first = await client.post("/predict", json={"session_id": "s", "value": 0.0, "step": 0})
        assert first.json()["step"] == 1
        second = await client.post("/predict", json={"session_id": "s", "value": 0.1, "step": 1})
        retry = await client.post("/predict", json={"session_id": "s", "value": 0.1, "step": 1})
        assert retry.status_code == 200
        assert retry.json()["replayed"] is True
        assert retry.json()["prediction"] == second.json()["prediction"]
        assert retry.json()["step"] == 2
        stale = await client.post("/predict", json={"session_id": "s", "value": 0.7, "step": 1})
        assert stale.status_code == 409
        assert stale.json()["error"]["code"] == "step_conflict"
        assert stale.json()["error"]["details"]["expected_step"] == 2
        ahead = await client.post("/predict", json={"session_id": "s", "value": 0.2, "step": 7})
        assert ahead.status_code == 409
        info = await client.get("/sessions/s")
        assert info.json()["step"] == 2  # nothing advanced by the retry or the conflicts


async def test_batch_feed_equals_one_at_a_time(settings):
    values = [0.0, 0.1, 0.2, 0.3, 0.4]
    async with asgi_client(settings) as client:
        batch_body = {"session_id": "b", "values": values, "step": 0}
        batch = await client.post("/predict/batch", json=batch_body)
        assert batch.status_code == 200
        singles = [
            (await client.post("/predict", json={"session_id": "one", "value": v})).json()
            for v in values
        ]
        assert batch.json()["predictions"] == [s["prediction"] for s in singles]
        assert batch.json()["step"] == 5
        # A batch is retry-safe too.
        again = await client.post("/predict/batch", json=batch_body)
        assert again.json()["replayed"] is True
        assert again.json()["predictions"] == batch.json()["predictions"]
        assert again.json()["step"] == 5


async def test_forecast_ahead_does_not_change_the_session(settings):
    async with asgi_client(settings) as client:
        await client.post("/predict/batch", json={"session_id": "f", "values": [0.0, 0.1, 0.2]})
        ahead = await client.post("/forecast", json={"session_id": "f", "horizon": 4})
        assert ahead.status_code == 200
        assert [round(v, 1) for v in ahead.json()["forecasts"]] == [0.3, 0.4, 0.5, 0.6]
        assert ahead.json()["step"] == 3
        assert (await client.get("/sessions/f")).json()["step"] == 3
        unknown = await client.post("/forecast", json={"session_id": "nobody", "horizon": 2})
        assert unknown.status_code == 404
        await client.post("/reset", json={"session_id": "f"})
        after_reset = await client.post("/forecast", json={"session_id": "f", "horizon": 2})
        assert after_reset.status_code == 409
        assert after_reset.json()["error"]["code"] == "no_values_yet"


async def test_session_info_and_delete(settings, forecaster):
    async with asgi_client(settings) as client:
        assert (await client.get("/sessions/x")).status_code == 404
        await client.post("/predict", json={"session_id": "x", "value": 0.5})
        info = (await client.get("/sessions/x")).json()
        assert info["step"] == 1 and info["model_version"] == forecaster.version
        assert info["created_at"] <= info["last_used_at"] < info["expires_at"]
        deleted = await client.delete("/sessions/x")
        assert deleted.json() == {"session_id": "x", "deleted": True}
        assert (await client.get("/sessions/x")).status_code == 404
        assert (await client.delete("/sessions/x")).json()["deleted"] is False
        # Resetting an unknown session is fine and creates nothing.
        assert (await client.post("/reset", json={"session_id": "ghost"})).status_code == 200
        assert (await client.get("/sessions/ghost")).status_code == 404


async def test_two_hundred_concurrent_predicts_on_one_session(settings, forecaster):
    values = [float(v) for v in np.random.default_rng(0).uniform(0, 1, 200)]
    async with asgi_client(settings) as client:
        responses = await asyncio.gather(
            *(client.post("/predict", json={"session_id": "hot", "value": v}) for v in values)
        )
        assert all(r.status_code == 200 for r in responses)
        steps = sorted(r.json()["step"] for r in responses)
        assert steps == list(range(1, 201))
        # Replaying the values in the order the service applied them gives every answer.
        steps_applied = [r.json()["step"] for r in responses]
        applied = sorted(zip(steps_applied, values, responses, strict=True))
        state = forecaster.zero_state()
        for _step, value, response in applied:
            state, (expected,) = forecaster.feed(state, [value])
            assert response.json()["prediction"] == pytest.approx(expected, abs=1e-12)
        ahead = (await client.post("/forecast", json={"session_id": "hot", "horizon": 1})).json()
        assert ahead["forecasts"][0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"value": 1.0}, "session_id: field required"),
        ({"session_id": "a"}, "value: field required"),
        ({"session_id": "a", "value": 1.0, "colour": "red"}, "colour: unknown field"),
        ({"session_id": "a b", "value": 1.0}, "session_id: must be 1-128 characters"),
        ({"session_id": "", "value": 1.0}, "session_id"),
        ({"session_id": "x" * 129, "value": 1.0}, "session_id"),
        ({"session_id": "a", "value": "high"}, "value: Input should be a valid number"),
        ({"session_id": "a", "value": 1.0, "step": -1}, "step: Input should be greater than"),
    ],
    ids=[
        "no-session",
        "no-value",
        "unknown-field",
        "bad-session-chars",
        "empty-session",
        "long-session",
        "string-value",
        "negative-step",
    ],
)
async def test_bad_predict_bodies_get_422_with_a_message(settings, body, fragment):
    async with asgi_client(settings) as client:
        response = await client.post("/predict", json=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert fragment in error["message"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
async def test_non_finite_values_are_refused(settings, literal):
    async with asgi_client(settings) as client:
        response = await client.post(
            "/predict",
            content=b'{"session_id": "n", "value": ' + literal + b"}",
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422
        assert "finite" in response.json()["error"]["message"]
        assert (await client.get("/sessions/n")).status_code == 404


async def test_extreme_values_never_poison_a_session(settings):
    async with asgi_client(settings) as client:
        extremes = [1.7e308, -1.7976931348623157e308, 5e-324, 0.5]
        body = {"session_id": "far", "values": extremes}
        response = await client.post("/predict/batch", json=body)
        assert response.status_code == 200
        follow_up = await client.post("/predict", json={"session_id": "far", "value": 0.3})
        predictions = [*response.json()["predictions"], follow_up.json()["prediction"]]
        assert all(math.isfinite(p) for p in predictions)
        ahead = await client.post("/forecast", json={"session_id": "far", "horizon": 5})
        assert all(math.isfinite(v) for v in ahead.json()["forecasts"])


async def test_too_many_values_oversized_bodies_and_junk(tutorial_models_dir, tmp_path):
    settings = Settings(
        model_dir=tutorial_models_dir,
        store="memory",
        max_values_per_request=10,
        max_body_bytes=2048,
    )
    async with asgi_client(settings) as client:
        many = await client.post("/predict/batch", json={"session_id": "m", "values": [0.1] * 11})
        assert many.status_code == 422
        assert "at most 10" in many.json()["error"]["message"]
        huge = await client.post("/predict/batch", json={"session_id": "m", "values": [0.1] * 999})
        assert huge.status_code == 413
        assert huge.json()["error"]["code"] == "body_too_large"

        async def chunks():
            yield b'{"session_id": "m", "values": ['
            for _ in range(500):
                yield b"0.1, "
            yield b"0.1]}"

        streamed = await client.post(
            "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        junk = await client.post(
            "/predict", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert junk.status_code == 422 and "not valid JSON" in junk.json()["error"]["message"]
        array = await client.post("/predict", json=[1, 2])
        assert array.status_code == 422
        empty = await client.post("/predict/batch", json={"session_id": "m", "values": []})
        assert empty.status_code == 422
        horizon = await client.post("/forecast", json={"session_id": "m", "horizon": 10**6})
        assert horizon.status_code == 422
        missing = await client.get("/no/such/route")
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
        assert (await client.get("/sessions/bad%20id")).status_code == 422


@pytest.mark.parametrize("store", STORES)
async def test_session_cap_refuses_new_sessions_and_keeps_active_ones(
    store, tutorial_models_dir, tmp_path, request
):
    settings = store_settings(store, tutorial_models_dir, tmp_path, request, max_sessions=2)
    async with asgi_client(settings) as client:

        async def feed(session_id: str):
            return await client.post("/predict", json={"session_id": session_id, "value": 0.1})

        assert (await feed("a")).status_code == 200
        assert (await feed("b")).status_code == 200
        refused = await feed("c")
        assert refused.status_code == 503
        assert "maximum of 2 sessions" in refused.json()["error"]["message"]
        # Existing sessions keep working at the cap, and deleting one makes room.
        assert (await feed("a")).json()["step"] == 2
        await client.delete("/sessions/b")
        assert (await feed("c")).status_code == 200


@pytest.mark.parametrize("store", STORES)
async def test_idle_sessions_expire(store, tutorial_models_dir, tmp_path, request):
    settings = store_settings(store, tutorial_models_dir, tmp_path, request, session_ttl_s=1)
    async with asgi_client(settings) as client:
        await client.post("/predict", json={"session_id": "idle", "value": 0.1})
        assert (await client.get("/sessions/idle")).status_code == 200
        await asyncio.sleep(1.2)
        assert (await client.get("/sessions/idle")).status_code == 404
        again = await client.post("/predict", json={"session_id": "idle", "value": 0.1})
        assert again.json()["step"] == 1


async def test_operations_endpoints(settings, forecaster):
    async with asgi_client(settings) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert ready.json()["store"] == settings.store
        model = (await client.get("/model")).json()
        assert model["version"] == forecaster.version
        assert model["architecture"]["units"] == 10 and model["training"]["batch_size"] == 3
        await client.post("/predict/batch", json={"session_id": "m1", "values": [0.1, 0.2]})
        await client.post("/predict", json={"session_id": "m2", "value": 0.1})
        await client.post("/predict", json={"session_id": "m2", "value": math.pi, "step": 0})
        await client.request("BREW", "/no-such-path")  # pooled, not a new label value
        text = (await client.get("/metrics")).text
        assert 'method="other",route="unmatched"' in text and "BREW" not in text
        requests = "forecast_http_requests_total"
        assert f'{requests}{{method="POST",route="/predict",status="200"}} 1.0' in text
        assert f'{requests}{{method="POST",route="/predict",status="409"}} 1.0' in text
        latency = "forecast_http_request_duration_seconds_bucket"
        assert f'{latency}{{le="0.001",method="POST",route="/predict/batch",status="200"}}' in text
        assert "forecast_active_sessions 2.0" in text
        assert "forecast_steps_total 3.0" in text


def _tamper_weights(folder: Path) -> None:
    (folder / "weights.npz").write_bytes(b"tampered")


def _future_format(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("breakage", "tolerance", "problem"),
    [
        (_tamper_weights, 1e-5, "fails its checksum"),
        (_future_format, 1e-5, "format_version 99"),
        # An impossible tolerance: the numpy-vs-Keras start-up check itself must refuse.
        (None, 1e-300, "disagrees with the batch-1 Keras copy"),
    ],
    ids=["tampered-weights", "incompatible-manifest", "failed-step-check"],
)
async def test_unusable_model_keeps_the_service_unready(
    tutorial_models_dir, tmp_path, caplog, breakage, tolerance, problem
):
    broken = tmp_path / "artifact"
    shutil.copytree((tutorial_models_dir / "latest").resolve(), broken)
    if breakage is not None:
        breakage(broken)
    settings = Settings(model_dir=broken, store="memory", check_tolerance=tolerance)
    async with asgi_client(settings) as client:
        assert (await client.get("/health")).status_code == 200
        ready = await client.get("/ready")
        assert ready.status_code == 503 and problem in ready.json()["problems"][0]
        predict = await client.post("/predict", json={"session_id": "a", "value": 0.1})
        assert predict.status_code == 503
        assert predict.json()["error"]["code"] == "model_not_ready"
    lines = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
    assert len(lines) == 1 and problem in lines[0]
