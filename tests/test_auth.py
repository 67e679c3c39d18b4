"""API keys: no one in without one, and no client ever touches another client's sessions."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.auth import ApiKeys
from app.main import create_app
from app.services import ModelSlot
from app.settings import Settings
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio

ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"

# Every route but /health, with a body it accepts and the status a valid key gets.
PROTECTED_ROUTES: list[tuple[str, str, dict[str, Any] | None, int]] = [
    ("POST", "/predict", {"session_id": "s", "value": 0.1}, 200),
    ("POST", "/predict/batch", {"session_id": "s", "values": [0.1]}, 200),
    ("POST", "/forecast", {"session_id": "nobody", "horizon": 1}, 404),
    ("POST", "/reset", {"session_id": "s"}, 200),
    ("GET", "/sessions/nobody", None, 404),
    ("DELETE", "/sessions/s", None, 200),
    ("GET", "/ready", None, 200),
    ("GET", "/model", None, 200),
    ("GET", "/metrics", None, 403),  # admin only: see tests/test_scopes.py
]
ROUTE_IDS = [f"{method} {path}" for method, path, _, _ in PROTECTED_ROUTES]
REFUSALS = [
    ({}, "missing API key"),
    ({"authorization": "Bearer wrong-key"}, "unknown API key"),
    ({"authorization": f"Basic {ALICE}"}, "expected 'Bearer <key>'"),
    ({"authorization": "Bearer "}, "expected 'Bearer <key>'"),
]
REFUSAL_IDS = ["no-header", "unknown-key", "basic-scheme", "empty-bearer"]


def _settings(models: Path) -> Settings:
    bob_digest = hashlib.sha256(BOB.encode()).hexdigest()
    # Alice's key in plain text, Bob's only as its sha256: both forms are accepted.
    return Settings(model_dir=models, store="memory", api_keys=f"{ALICE}, sha256:{bob_digest}")


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("method", "path", "body", "_status"), PROTECTED_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(("headers", "fragment"), REFUSALS, ids=REFUSAL_IDS)
async def test_protected_routes_refuse_requests_without_a_valid_key(
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    _status: int,
    headers: dict[str, str],
    fragment: str,
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert fragment in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body", "status"), PROTECTED_ROUTES, ids=ROUTE_IDS)
async def test_protected_routes_answer_a_valid_key(
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        response = await client.request(method, path, json=body, headers=_auth(BOB))
    assert response.status_code == status, response.text


@pytest.mark.parametrize("path", ["/health", "/docs", "/openapi.json"])
async def test_health_and_docs_need_no_key(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, path: str
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        assert (await client.get(path)).status_code == 200


async def test_a_route_added_without_any_auth_code_is_protected(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    app = create_app(_settings(tutorial_models_dir), model=tutorial_model)

    @app.get("/added-later")
    async def added_later() -> dict[str, str]:
        return {"secret": "data"}

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            refused = await client.get("/added-later")
            allowed = await client.get("/added-later", headers=_auth(ALICE))
    assert refused.status_code == 401
    assert allowed.json() == {"secret": "data"}


async def test_openapi_declares_the_bearer_scheme_when_keys_are_set(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"] == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "one of the keys in FORECAST_API_KEYS",
        }
    }
    assert schema["security"] == [{"bearerAuth": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []


async def test_openapi_declares_no_scheme_in_open_mode(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory")
    async with asgi_client(settings, tutorial_model) as client:
        schema = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "security" not in schema


async def test_sessions_are_namespaced_per_key(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        feed = {"session_id": "shared-name", "values": [0.0, 0.1, 0.2]}
        alice = await client.post("/predict/batch", json=feed, headers=_auth(ALICE))
        # Bob uses the same session_id: a different session, starting from zero.
        bob = await client.post(
            "/predict", json={"session_id": "shared-name", "value": 0.0}, headers=_auth(BOB)
        )
    assert alice.json()["step"] == 3
    assert bob.json()["step"] == 1
    assert bob.json()["prediction"] == alice.json()["predictions"][0]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/predict", {"session_id": "shared-name", "value": 0.3, "step": 3}),
        ("POST", "/reset", {"session_id": "shared-name"}),
        ("DELETE", "/sessions/shared-name", None),
    ],
    ids=["advance", "reset", "delete"],
)
async def test_one_key_cannot_change_another_keys_session(
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        feed = {"session_id": "shared-name", "values": [0.0, 0.1, 0.2]}
        await client.post("/predict/batch", json=feed, headers=_auth(ALICE))
        await client.request(method, path, json=body, headers=_auth(BOB))
        mine = await client.get("/sessions/shared-name", headers=_auth(ALICE))
        ahead = await client.post(
            "/forecast", json={"session_id": "shared-name", "horizon": 1}, headers=_auth(ALICE)
        )
    assert mine.json()["step"] == 3
    assert round(ahead.json()["forecasts"][0], 1) == 0.3


async def test_one_key_cannot_read_another_keys_session(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        await client.post(
            "/predict", json={"session_id": "mine", "value": 0.1}, headers=_auth(ALICE)
        )
        seen_by_bob = await client.get("/sessions/mine", headers=_auth(BOB))
    assert seen_by_bob.status_code == 404


async def test_open_mode_is_logged(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app"):
        settings = Settings(model_dir=tutorial_models_dir, store="memory")
        async with asgi_client(settings, tutorial_model) as client:
            response = await client.post("/predict", json={"session_id": "o", "value": 0.1})
    assert response.status_code == 200
    assert any("open to every caller" in record.getMessage() for record in caplog.records)


def test_malformed_key_digest_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        ApiKeys.from_spec("sha256:nothex")
