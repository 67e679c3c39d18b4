"""API keys: no one in without one, and no client ever touches another client's sessions."""

from __future__ import annotations

import hashlib
import logging

import pytest

from app.auth import ApiKeys
from app.settings import Settings
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio

ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"


def _settings(models, **extra) -> Settings:
    bob_digest = hashlib.sha256(BOB.encode()).hexdigest()
    # Alice's key in plain text, Bob's only as its sha256: both forms are accepted.
    return Settings(
        model_dir=models, store="memory", api_keys=f"{ALICE}, sha256:{bob_digest}", **extra
    )


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/predict", {"session_id": "s", "value": 0.1}),
        ("POST", "/predict/batch", {"session_id": "s", "values": [0.1]}),
        ("POST", "/forecast", {"session_id": "s", "horizon": 1}),
        ("POST", "/reset", {"session_id": "s"}),
        ("GET", "/sessions/s", None),
        ("DELETE", "/sessions/s", None),
        ("GET", "/ready", None),
        ("GET", "/model", None),
        ("GET", "/metrics", None),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_every_route_but_health_needs_a_valid_key(tutorial_models_dir, method, path, body):
    async with asgi_client(_settings(tutorial_models_dir)) as client:
        for headers, fragment in [
            ({}, "missing API key"),
            (_auth("wrong-key"), "unknown API key"),
            ({"authorization": f"Basic {ALICE}"}, "expected 'Bearer <key>'"),
            ({"authorization": "Bearer "}, "expected 'Bearer <key>'"),
        ]:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert fragment in response.json()["error"]["message"]
            assert response.headers["www-authenticate"] == "Bearer"
        allowed = await client.request(method, path, json=body, headers=_auth(ALICE))
        assert allowed.status_code != 401
        assert (await client.get("/health")).status_code == 200


async def test_sessions_are_namespaced_per_key(tutorial_models_dir):
    async with asgi_client(_settings(tutorial_models_dir)) as client:
        feed = {"session_id": "shared-name", "values": [0.0, 0.1, 0.2]}
        alice = await client.post("/predict/batch", json=feed, headers=_auth(ALICE))
        assert alice.json()["step"] == 3
        # Bob uses the same session_id: a different session, starting from zero.
        bob = await client.post(
            "/predict", json={"session_id": "shared-name", "value": 0.0}, headers=_auth(BOB)
        )
        assert bob.json()["step"] == 1
        assert bob.json()["prediction"] == alice.json()["predictions"][0]
        # Bob can neither advance with Alice's step, reset, read nor delete her session.
        conflict = await client.post(
            "/predict",
            json={"session_id": "shared-name", "value": 0.3, "step": 3},
            headers=_auth(BOB),
        )
        assert conflict.status_code == 409
        await client.post("/reset", json={"session_id": "shared-name"}, headers=_auth(BOB))
        await client.delete("/sessions/shared-name", headers=_auth(BOB))
        mine = await client.get("/sessions/shared-name", headers=_auth(ALICE))
        assert mine.json()["step"] == 3
        ahead = await client.post(
            "/forecast", json={"session_id": "shared-name", "horizon": 1}, headers=_auth(ALICE)
        )
        assert round(ahead.json()["forecasts"][0], 1) == 0.3
        assert (await client.get("/sessions/shared-name", headers=_auth(BOB))).status_code == 404


async def test_open_mode_is_logged(tutorial_models_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="app"):
        async with asgi_client(Settings(model_dir=tutorial_models_dir, store="memory")) as client:
            response = await client.post("/predict", json={"session_id": "o", "value": 0.1})
            assert response.status_code == 200
    assert any("open to every caller" in record.getMessage() for record in caplog.records)


def test_malformed_key_digest_is_refused_at_start():
    with pytest.raises(ValueError, match="64 hex digits"):
        ApiKeys("sha256:nothex")
