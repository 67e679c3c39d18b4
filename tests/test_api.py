"""The HTTP API through httpx's ASGI transport, with the lifespan running the real model."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.collector import SERVING_YOUNG_GC_THRESHOLD
from app.forecaster import Forecaster
from app.services import ModelSlot
from app.settings import Settings
from tests.helpers import Clock, asgi_client

pytestmark = pytest.mark.anyio


STORES = ["memory", "sqlite", "redis", "redis-cluster"]
OpenClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def store_settings(
    store: str, models: Path, tmp_path: Path, request: pytest.FixtureRequest, **overrides: Any
) -> Settings:
    """Settings for one store; a Redis store gets its own key prefix on the shared test server,
    a Redis Cluster store the test session's cluster, emptied (its counts are per node)."""
    extra = {}
    if store == "redis":
        redis_server = request.getfixturevalue("redis_server")
        extra = {"redis_url": redis_server.url, "redis_prefix": f"test-{tmp_path.name}-{store}"}
    if store == "redis-cluster":
        store = "redis"
        extra = {"redis_url": request.getfixturevalue("empty_redis_cluster").url}
    fields = {"model_dir": models, "store": store, "data_dir": tmp_path / store}
    return Settings.model_validate({**fields, **extra, **overrides})


@pytest.fixture(params=STORES)
def settings(request: pytest.FixtureRequest, tutorial_models_dir: Path, tmp_path: Path) -> Settings:
    return store_settings(request.param, tutorial_models_dir, tmp_path, request)


@pytest.fixture
async def client(settings: Settings, tutorial_model: ModelSlot) -> AsyncIterator[httpx.AsyncClient]:
    """The app on each store, serving the session's already-checked default model."""
    async with asgi_client(settings, tutorial_model) as client:
        yield client


# The cluster's cap counts per shard: tests/test_redis_cluster.py.
@pytest.fixture(params=["memory", "sqlite", "redis"])
async def capped_client(
    request: pytest.FixtureRequest,
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on each store, holding at most two sessions."""
    settings = store_settings(request.param, tutorial_models_dir, tmp_path, request, max_sessions=2)
    async with asgi_client(settings, tutorial_model) as client:
        yield client


@pytest.fixture
def memory_client(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """Open the app on the memory store with some settings overridden."""

    def open_client(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        settings = Settings(model_dir=tutorial_models_dir, store="memory", **overrides)
        return asgi_client(settings, tutorial_model)

    return open_client


async def test_tutorial_walk_through_then_reset_and_again(
    client: httpx.AsyncClient, forecaster: Forecaster
) -> None:
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


async def test_matching_step_applies(client: httpx.AsyncClient) -> None:
    first = await client.post("/predict", json={"session_id": "s", "value": 0.0, "step": 0})
    second = await client.post("/predict", json={"session_id": "s", "value": 0.1, "step": 1})
    assert (first.json()["step"], second.json()["step"]) == (1, 2)


async def test_resent_request_replays_its_answer(client: httpx.AsyncClient) -> None:
    await client.post("/predict", json={"session_id": "s", "value": 0.0, "step": 0})
    second = await client.post("/predict", json={"session_id": "s", "value": 0.1, "step": 1})
    retry = await client.post("/predict", json={"session_id": "s", "value": 0.1, "step": 1})
    assert retry.status_code == 200
    assert retry.json() == {**second.json(), "replayed": True}
    assert (await client.get("/sessions/s")).json()["step"] == 2


@pytest.mark.parametrize("step", [1, 7], ids=["stale", "ahead"])
async def test_other_steps_conflict_and_change_nothing(
    client: httpx.AsyncClient, step: int
) -> None:
    await client.post("/predict/batch", json={"session_id": "s", "values": [0.0, 0.1]})
    conflict = await client.post("/predict", json={"session_id": "s", "value": 0.7, "step": step})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "step_conflict"
    assert conflict.json()["error"]["details"] == {"expected_step": 2}
    assert (await client.get("/sessions/s")).json()["step"] == 2


async def test_batch_feed_equals_one_at_a_time(client: httpx.AsyncClient) -> None:
    values = [0.0, 0.1, 0.2, 0.3, 0.4]
    batch = await client.post("/predict/batch", json={"session_id": "b", "values": values})
    singles = [
        (await client.post("/predict", json={"session_id": "one", "value": v})).json()
        for v in values
    ]
    assert batch.json()["predictions"] == [s["prediction"] for s in singles]
    assert batch.json()["step"] == 5


async def test_resent_batch_replays_its_answer(client: httpx.AsyncClient) -> None:
    body = {"session_id": "b", "values": [0.0, 0.1, 0.2], "step": 0}
    batch = await client.post("/predict/batch", json=body)
    again = await client.post("/predict/batch", json=body)
    assert again.json() == {**batch.json(), "replayed": True}


async def test_forecast_ahead_feeds_forecasts_back(client: httpx.AsyncClient) -> None:
    await client.post("/predict/batch", json={"session_id": "f", "values": [0.0, 0.1, 0.2]})
    ahead = await client.post("/forecast", json={"session_id": "f", "horizon": 4})
    assert ahead.status_code == 200
    assert [round(v, 1) for v in ahead.json()["forecasts"]] == [0.3, 0.4, 0.5, 0.6]
    assert ahead.json()["step"] == 3


async def test_forecast_ahead_does_not_change_the_session(client: httpx.AsyncClient) -> None:
    fed = await client.post("/predict/batch", json={"session_id": "f", "values": [0.0, 0.1]})
    await client.post("/forecast", json={"session_id": "f", "horizon": 4})
    after = await client.post("/predict", json={"session_id": "f", "value": 0.2, "step": 2})
    reference = await client.post(
        "/predict/batch", json={"session_id": "g", "values": [0.0, 0.1, 0.2]}
    )
    assert fed.json()["step"] == 2
    assert after.json()["prediction"] == reference.json()["predictions"][-1]


async def test_forecast_for_an_unknown_session_is_404(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/forecast", json={"session_id": "nobody", "horizon": 2})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "session_not_found"
    assert "'nobody'" in unknown.json()["error"]["message"]


async def test_forecast_after_a_reset_needs_a_value_first(client: httpx.AsyncClient) -> None:
    await client.post("/predict", json={"session_id": "f", "value": 0.1})
    await client.post("/reset", json={"session_id": "f"})
    after_reset = await client.post("/forecast", json={"session_id": "f", "horizon": 2})
    assert after_reset.status_code == 409
    assert after_reset.json()["error"]["code"] == "no_values_yet"


async def test_session_info(client: httpx.AsyncClient, forecaster: Forecaster) -> None:
    await client.post("/predict", json={"session_id": "x", "value": 0.5})
    info = (await client.get("/sessions/x")).json()
    assert info["step"] == 1 and info["model_version"] == forecaster.version
    assert info["created_at"] <= info["last_used_at"] < info["expires_at"]


async def test_unknown_session_info_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/sessions/x")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


async def test_delete_forgets_a_session(client: httpx.AsyncClient) -> None:
    await client.post("/predict", json={"session_id": "x", "value": 0.5})
    deleted = await client.delete("/sessions/x")
    assert deleted.json() == {"session_id": "x", "deleted": True}
    assert (await client.get("/sessions/x")).status_code == 404


async def test_deleting_twice_is_safe(client: httpx.AsyncClient) -> None:
    await client.post("/predict", json={"session_id": "x", "value": 0.5})
    await client.delete("/sessions/x")
    again = await client.delete("/sessions/x")
    assert again.status_code == 200 and again.json()["deleted"] is False


async def test_resetting_an_unknown_session_creates_nothing(client: httpx.AsyncClient) -> None:
    reset = await client.post("/reset", json={"session_id": "ghost"})
    assert reset.json() == {"session_id": "ghost", "step": 0}
    assert (await client.get("/sessions/ghost")).status_code == 404


async def test_two_hundred_concurrent_predicts_on_one_session(
    client: httpx.AsyncClient, forecaster: Forecaster
) -> None:
    values = [float(v) for v in np.random.default_rng(0).uniform(0, 1, 200)]
    responses = await asyncio.gather(
        *(client.post("/predict", json={"session_id": "hot", "value": v}) for v in values)
    )
    assert [r.status_code for r in responses] == [200] * 200
    assert sorted(r.json()["step"] for r in responses) == list(range(1, 201))
    # Replaying the values in the order the service applied them gives every answer.
    applied = sorted(zip((r.json()["step"] for r in responses), values, responses, strict=True))
    state = forecaster.zero_state()
    for _step, value, response in applied:
        state, (expected,) = forecaster.feed(state, [value])
        assert response.json()["prediction"] == pytest.approx(expected, abs=1e-12)


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
        ({"session_id": "a", "value": 1.0, "step": True}, "step"),
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
        "boolean-step",
    ],
)
async def test_bad_predict_bodies_get_422_with_a_message(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    response = await client.post("/predict", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert fragment in error["message"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
async def test_non_finite_values_are_refused(client: httpx.AsyncClient, literal: bytes) -> None:
    response = await client.post(
        "/predict",
        content=b'{"session_id": "n", "value": ' + literal + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "finite" in response.json()["error"]["message"]
    assert (await client.get("/sessions/n")).status_code == 404


async def test_extreme_values_never_poison_a_session(client: httpx.AsyncClient) -> None:
    extremes = [1.7e308, -1.7976931348623157e308, 5e-324, 0.5]
    response = await client.post("/predict/batch", json={"session_id": "far", "values": extremes})
    follow_up = await client.post("/predict", json={"session_id": "far", "value": 0.3})
    ahead = await client.post("/forecast", json={"session_id": "far", "horizon": 5})
    predictions = [*response.json()["predictions"], follow_up.json()["prediction"]]
    assert all(math.isfinite(p) for p in [*predictions, *ahead.json()["forecasts"]])


async def test_too_many_values_get_422_naming_the_limit(memory_client: OpenClient) -> None:
    async with memory_client(max_values_per_request=10) as client:
        many = await client.post("/predict/batch", json={"session_id": "m", "values": [0.1] * 11})
    assert many.status_code == 422
    assert many.json()["error"]["message"] == "values has 11 items; send at most 10 per request"


async def test_horizon_over_the_limit_gets_422_naming_the_limit(memory_client: OpenClient) -> None:
    async with memory_client(max_horizon=5) as client:
        response = await client.post("/forecast", json={"session_id": "m", "horizon": 6})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "horizon: 6 is above the limit of 5"


async def test_limits_are_published_in_the_schema(memory_client: OpenClient) -> None:
    async with memory_client(max_values_per_request=10, max_horizon=5) as client:
        schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert schemas["PredictBatchRequest"]["properties"]["values"]["maxItems"] == 10
    assert schemas["ForecastRequest"]["properties"]["horizon"]["maximum"] == 5


async def test_body_over_the_declared_length_gets_413(memory_client: OpenClient) -> None:
    async with memory_client(max_body_bytes=2048) as client:
        huge = await client.post("/predict/batch", json={"session_id": "m", "values": [0.1] * 999})
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "body_too_large"
    assert huge.json()["error"]["details"] == {"max_body_bytes": 2048}


async def test_streamed_body_growing_past_the_limit_gets_413(memory_client: OpenClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"session_id": "m", "values": ['
        for _ in range(500):
            yield b"0.1, "
        yield b"0.1]}"

    async with memory_client(max_body_bytes=2048) as client:
        streamed = await client.post(
            "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
        )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'{"session_id": "m", "values": []}', "values: List should have at least 1 item"),
    ],
    ids=["not-json", "array", "empty-values"],
)
async def test_junk_bodies_get_422(
    memory_client: OpenClient, content: bytes, fragment: str
) -> None:
    async with memory_client() as client:
        response = await client.post(
            "/predict/batch", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"]


async def test_json_that_does_not_parse_is_placed_by_character_not_named_as_a_field(
    memory_client: OpenClient,
) -> None:
    async with memory_client() as client:
        response = await client.post(
            "/predict",
            content=b'{"session_id": "x1", "value": }',
            headers={"content-type": "application/json"},
        )
    error = response.json()["error"]
    assert response.status_code == 422
    assert "not valid JSON at character 31" in error["message"]
    assert [e["field"] for e in error["details"]["errors"]] == ["body"]


async def test_unknown_path_gets_404_in_the_error_shape(memory_client: OpenClient) -> None:
    async with memory_client() as client:
        missing = await client.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_bad_session_id_in_a_path_gets_422(memory_client: OpenClient) -> None:
    async with memory_client() as client:
        response = await client.get("/sessions/bad%20id")
    assert response.status_code == 422
    assert "session_id: must be 1-128 characters" in response.json()["error"]["message"]


async def test_wrong_method_gets_405_listing_every_allowed_method(
    memory_client: OpenClient,
) -> None:
    async with memory_client() as client:
        response = await client.put("/sessions/x")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"


async def test_session_cap_refuses_new_sessions(capped_client: httpx.AsyncClient) -> None:
    for session_id in ("a", "b"):
        await capped_client.post("/predict", json={"session_id": session_id, "value": 0.1})
    refused = await capped_client.post("/predict", json={"session_id": "c", "value": 0.1})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "session_limit_reached"
    # Tenants share the cap: the answer tells none of them the service's capacity.
    assert "2" not in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"] == {}


async def test_session_cap_keeps_serving_existing_sessions(
    capped_client: httpx.AsyncClient,
) -> None:
    for session_id in ("a", "b", "c"):
        await capped_client.post("/predict", json={"session_id": session_id, "value": 0.1})
    again = await capped_client.post("/predict", json={"session_id": "a", "value": 0.1})
    assert again.json()["step"] == 2


async def test_deleting_a_session_makes_room_under_the_cap(
    capped_client: httpx.AsyncClient,
) -> None:
    for session_id in ("a", "b"):
        await capped_client.post("/predict", json={"session_id": session_id, "value": 0.1})
    await capped_client.delete("/sessions/b")
    admitted = await capped_client.post("/predict", json={"session_id": "c", "value": 0.1})
    assert admitted.status_code == 200


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_idle_sessions_expire(
    store: str,
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    clock = Clock()
    settings = store_settings(store, tutorial_models_dir, tmp_path, request, session_ttl_s=60)
    async with asgi_client(settings, tutorial_model, clock) as client:
        await client.post("/predict", json={"session_id": "idle", "value": 0.1})
        clock.advance(59)
        alive = await client.get("/sessions/idle")
        clock.advance(2)
        expired = await client.get("/sessions/idle")
        again = await client.post("/predict", json={"session_id": "idle", "value": 0.1})
    assert alive.status_code == 200
    assert expired.status_code == 404
    assert again.json()["step"] == 1


async def test_redis_sessions_carry_the_ttl_and_each_use_renews_it(
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Redis expires keys on its own clock; the service must set, and renew, the key's TTL."""
    import redis.asyncio as aioredis

    settings = store_settings("redis", tutorial_models_dir, tmp_path, request, session_ttl_s=60)
    raw = aioredis.Redis.from_url(settings.redis_url)
    key = f"{settings.redis_prefix}:s:public/idle"
    async with asgi_client(settings, tutorial_model) as client:
        await client.post("/predict", json={"session_id": "idle", "value": 0.1})
        await raw.pexpire(key, 5_000)  # as if 55 s had passed
        await client.post("/predict", json={"session_id": "idle", "value": 0.2})
        ttl_ms = await raw.pttl(key)
    await raw.aclose()
    assert 59_000 < ttl_ms <= 60_000


async def test_health_and_readiness(client: httpx.AsyncClient, settings: Settings) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["store"] == settings.store


async def test_model_describes_the_served_manifest(
    client: httpx.AsyncClient, forecaster: Forecaster
) -> None:
    model = (await client.get("/model")).json()
    assert model == forecaster.manifest.model_dump(mode="json")


async def test_model_has_a_typed_schema(memory_client: OpenClient) -> None:
    async with memory_client() as client:
        schema = (await client.get("/openapi.json")).json()
    response = schema["paths"]["/model"]["get"]["responses"]["200"]
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServedManifest"
    }


async def test_metrics_count_requests_sessions_and_steps(client: httpx.AsyncClient) -> None:
    await client.post("/predict/batch", json={"session_id": "m1", "values": [0.1, 0.2]})
    await client.post("/predict", json={"session_id": "m2", "value": 0.1})
    await client.post("/predict", json={"session_id": "m2", "value": math.pi, "step": 0})
    text = (await client.get("/metrics")).text
    requests = "forecast_http_requests_total"
    assert f'{requests}{{method="POST",route="/predict",status="200"}} 1.0' in text
    assert f'{requests}{{method="POST",route="/predict",status="409"}} 1.0' in text
    latency = "forecast_http_request_duration_seconds_bucket"
    assert f'{latency}{{le="0.001",method="POST",route="/predict/batch",status="200"}}' in text
    assert "forecast_active_sessions 2.0" in text
    assert "forecast_steps_total 3.0" in text


async def test_metrics_pool_unknown_methods_and_paths(client: httpx.AsyncClient) -> None:
    await client.request("BREW", "/no-such-path")
    text = (await client.get("/metrics")).text
    assert 'method="other",route="unmatched"' in text and "BREW" not in text


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
    tutorial_models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    breakage: Callable[[Path], None] | None,
    tolerance: float,
    problem: str,
) -> None:
    broken = tmp_path / "artifact"
    shutil.copytree((tutorial_models_dir / "latest").resolve(), broken)
    if breakage is not None:
        breakage(broken)
    settings = Settings(model_dir=broken, store="memory", check_tolerance=tolerance)
    async with asgi_client(settings) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")
        predict = await client.post("/predict", json={"session_id": "a", "value": 0.1})
    assert health.status_code == 200
    assert ready.status_code == 503 and problem in ready.json()["problems"][0]
    assert predict.status_code == 503
    assert predict.json()["error"]["code"] == "model_not_ready"
    lines = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
    assert len(lines) == 1 and problem in lines[0]


async def test_the_collector_waits_longer_while_serving_and_as_before_after(
    memory_client: OpenClient,
) -> None:
    before = gc.get_threshold()
    async with memory_client() as client:
        response = await client.post("/predict", json={"session_id": "s", "value": 0.5})
        assert response.status_code == 200
        assert gc.get_threshold() == (SERVING_YOUNG_GC_THRESHOLD, *before[1:])
    assert gc.get_threshold() == before
