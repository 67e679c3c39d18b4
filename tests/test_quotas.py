"""Per-key session quotas: a tenant at its quota cannot stop another from opening sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.services import ModelSlot
from bench.local import RedisServer
from tests.helpers import Server, asgi_client, uvicorn_server
from tests.test_api import STORES, store_settings

pytestmark = pytest.mark.anyio

ALICE, BOB, ADMIN = "alice-key-0123456789", "bob-key-9876543210", "admin-key-5555555555"
# Three keys share a cap of 6: each key's quota is 6 // 3 = 2.
KEYS = f"{ALICE},{BOB},admin:{ADMIN}"


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def open_session(client: httpx.AsyncClient, key: str, session_id: str) -> httpx.Response:
    body = {"session_id": session_id, "value": 0.1}
    return await client.post("/predict", json=body, headers=auth(key))


@pytest.fixture(params=STORES)
async def client(
    request: pytest.FixtureRequest,
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on each store, three keys sharing a cap of six sessions (on a cluster, whose
    cap is per shard, a larger cap and an explicit quota of two)."""
    limits = {"max_sessions": 6}
    if request.param == "redis-cluster":
        limits = {"max_sessions": 600, "max_sessions_per_key": 2}
    settings = store_settings(
        request.param, tutorial_models_dir, tmp_path, request, api_keys=KEYS, **limits
    )
    async with asgi_client(settings, tutorial_model) as client:
        yield client


async def test_a_key_at_its_quota_gets_429(client: httpx.AsyncClient) -> None:
    for session_id in ("a1", "a2"):
        assert (await open_session(client, ALICE, session_id)).status_code == 200
    refused = await open_session(client, ALICE, "a3")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "session_quota_reached"
    assert refused.json()["error"]["details"] == {"max_sessions_per_key": 2}


async def test_a_key_at_its_quota_keeps_its_sessions(client: httpx.AsyncClient) -> None:
    for session_id in ("a1", "a2", "a3"):
        await open_session(client, ALICE, session_id)
    again = await open_session(client, ALICE, "a1")
    assert again.status_code == 200
    assert again.json()["step"] == 2


async def test_a_key_at_its_quota_cannot_stop_another_from_opening_sessions(
    client: httpx.AsyncClient,
) -> None:
    for index in range(5):  # Alice tries for far more than her share
        await open_session(client, ALICE, f"a{index}")
    statuses = [(await open_session(client, BOB, f"b{index}")).status_code for index in range(2)]
    assert statuses == [200, 200]


async def test_a_deleted_session_gives_its_place_back(client: httpx.AsyncClient) -> None:
    for session_id in ("a1", "a2"):
        await open_session(client, ALICE, session_id)
    await client.delete("/sessions/a1", headers=auth(ALICE))
    assert (await open_session(client, ALICE, "a3")).status_code == 200


async def test_admins_see_every_namespaces_session_count(client: httpx.AsyncClient) -> None:
    for session_id in ("a1", "a2"):
        await open_session(client, ALICE, session_id)
    await open_session(client, BOB, "b1")
    listing = (await client.get("/admin/sessions", headers=auth(ADMIN))).json()
    counts = sorted(entry["sessions"] for entry in listing["namespaces"])
    assert counts == [0, 1, 2]  # the admin's own namespace holds nothing
    assert listing["sessions"] == 3
    assert {entry["max_sessions"] for entry in listing["namespaces"]} == {2}


async def test_an_explicit_quota_per_key_wins_over_the_shared_out_cap(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    from app.settings import Settings

    settings = Settings(
        model_dir=tutorial_models_dir,
        store="memory",
        api_keys=KEYS,
        max_sessions=6,
        max_sessions_per_key=1,
    )
    async with asgi_client(settings, tutorial_model) as client:
        first = await open_session(client, ALICE, "a1")
        second = await open_session(client, ALICE, "a2")
    assert (first.status_code, second.status_code) == (200, 429)


# -- two replicas sharing one Redis ---------------------------------------------------------------


@pytest.fixture
def replicas(
    redis_server: RedisServer, tutorial_models_dir: Path, tmp_path: Path
) -> Iterator[list[Server]]:
    """Two uvicorn replicas sharing the test Redis, the same keys, a quota of 3 per key."""
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": "redis",
        "FORECAST_REDIS_URL": redis_server.url,
        "FORECAST_REDIS_PREFIX": f"quota-{tmp_path.name}",
        "FORECAST_API_KEYS": KEYS,
        "FORECAST_MAX_SESSIONS_PER_KEY": "3",
    }
    with (
        uvicorn_server(env, tmp_path / "one.log", api_key=ADMIN) as one,
        uvicorn_server(env, tmp_path / "two.log", api_key=ADMIN) as two,
    ):
        yield [one, two]


async def test_the_quota_is_exact_across_two_replicas(replicas: list[Server]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:

        async def open_on(index: int, key: str) -> int:
            server = replicas[index % 2]
            body = {"session_id": f"s{index}", "value": 0.1}
            response = await http.post(f"{server.base_url}/predict", json=body, headers=auth(key))
            return response.status_code

        # Twelve new sessions at once, alternating replicas: exactly three may be admitted.
        alice = await asyncio.gather(*(open_on(index, ALICE) for index in range(12)))
        bob = await asyncio.gather(*(open_on(index, BOB) for index in range(3)))
    assert sorted(alice) == [200] * 3 + [429] * 9
    assert bob == [200, 200, 200]


async def test_a_predict_many_item_over_the_quota_is_refused_alone(
    client: httpx.AsyncClient,
) -> None:
    for session_id in ("a1", "a2"):  # Alice at her quota of two
        assert (await open_session(client, ALICE, session_id)).status_code == 200
    items = [
        {"session_id": "a1", "value": 0.2},
        {"session_id": "a3", "value": 0.2},  # a new session: over the quota
        {"session_id": "a2", "value": 0.2},
        {"session_id": "a3", "value": 0.3},
    ]
    response = await client.post("/predict/many", json={"items": items}, headers=auth(ALICE))
    assert response.status_code == 207
    results = response.json()["results"]
    assert [results[0]["step"], results[2]["step"]] == [2, 2]
    for refused in (results[1], results[3]):
        assert refused["error"]["code"] == "session_quota_reached"
        assert refused["error"]["details"] == {"max_sessions_per_key": 2}
    assert (await client.get("/sessions/a3", headers=auth(ALICE))).status_code == 404
    # Counted as refusals, one per session, as /predict's would be.
    metrics = (await client.get("/metrics", headers=auth(ADMIN))).text
    assert 'forecast_limit_refusals_total{reason="session_quota"} 1.0' in metrics
    # Bob's quota is his own: his new sessions in one request all fit.
    bob = [{"session_id": f"b{index}", "value": 0.1} for index in range(2)]
    response = await client.post("/predict/many", json={"items": bob}, headers=auth(BOB))
    assert response.status_code == 200, response.text
