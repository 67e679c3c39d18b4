"""POST /predict/many on every store, through the ASGI transport with the real model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.services import ModelSlot
from app.settings import Settings
from tests.helpers import asgi_client
from tests.test_api import STORES, store_settings

pytestmark = pytest.mark.anyio


@pytest.fixture(params=STORES)
async def client(
    request: pytest.FixtureRequest,
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = store_settings(request.param, tutorial_models_dir, tmp_path, request)
    async with asgi_client(settings, tutorial_model) as client:
        yield client


def items(*specs: tuple[Any, ...]) -> dict[str, Any]:
    """A /predict/many body from (session, value) or (session, value, step) tuples."""
    body = []
    for spec in specs:
        item: dict[str, Any] = {"session_id": spec[0], "value": spec[1]}
        if len(spec) > 2:
            item["step"] = spec[2]
        body.append(item)
    return {"items": body}


async def many(client: httpx.AsyncClient, *specs: tuple[Any, ...]) -> httpx.Response:
    return await client.post("/predict/many", json=items(*specs))


async def step_of(client: httpx.AsyncClient, session: str) -> int:
    step: int = (await client.get(f"/sessions/{session}")).json()["step"]
    return step


async def test_each_item_answers_as_predict_would(client: httpx.AsyncClient) -> None:
    values = [("a", 0.0), ("b", 0.5), ("a", 0.1), ("c", 0.9), ("b", 0.6), ("a", 0.2)]
    response = await many(client, *values)
    expected = [
        (await client.post("/predict", json={"session_id": f"twin-{s}", "value": v})).json()
        for s, v in values
    ]
    assert response.status_code == 200
    results = response.json()["results"]
    assert results == [
        {**answer, "session_id": session}
        for answer, (session, _) in zip(expected, values, strict=True)
    ]
    assert [r["step"] for r in results] == [1, 1, 2, 1, 2, 3]


async def test_resent_request_replays_every_answer(client: httpx.AsyncClient) -> None:
    await many(client, ("a", 0.0), ("b", 0.0))
    body = (("a", 0.1, 1), ("b", 0.2, 1), ("a", 0.3, 2), ("c", 0.4, 0))
    first = await many(client, *body)
    again = await many(client, *body)
    assert again.status_code == 200
    assert again.json()["results"] == [{**r, "replayed": True} for r in first.json()["results"]]
    assert [await step_of(client, s) for s in "abc"] == [3, 2, 1]


async def test_a_conflicting_item_fails_alone(client: httpx.AsyncClient) -> None:
    await many(client, ("a", 0.0), ("b", 0.0))
    response = await many(client, ("a", 0.1, 1), ("b", 0.1, 7), ("c", 0.1, 0))
    assert response.status_code == 207
    ok_a, refused, ok_c = response.json()["results"]
    assert (ok_a["step"], ok_c["step"]) == (2, 1)
    assert refused["error"]["code"] == "step_conflict"
    assert refused["error"]["details"] == {"expected_step": 1}
    assert [await step_of(client, s) for s in "abc"] == [2, 1, 1]


async def test_a_session_stops_at_its_first_wrong_step(client: httpx.AsyncClient) -> None:
    response = await many(client, ("a", 0.0, 0), ("a", 0.1, 1), ("a", 0.2, 5), ("a", 0.3))
    applied_0, applied_1, wrong, behind = response.json()["results"]
    assert (applied_0["step"], applied_1["step"]) == (1, 2)
    assert wrong["error"]["details"] == {"expected_step": 2}
    assert behind["error"]["code"] == "step_conflict"
    assert behind["error"]["details"] == {"expected_step": 2}
    assert "earlier item" in behind["error"]["message"]
    assert await step_of(client, "a") == 2


async def test_a_resent_request_with_a_wrong_step_replays_its_prefix(
    client: httpx.AsyncClient,
) -> None:
    body = (("a", 0.0, 0), ("a", 0.1, 1), ("a", 0.2, 5))
    first = (await many(client, *body)).json()["results"]
    again = (await many(client, *body)).json()["results"]
    assert again[:2] == [{**r, "replayed": True} for r in first[:2]]
    assert again[2] == first[2]
    assert await step_of(client, "a") == 2


async def test_refused_first_item_refuses_its_session(client: httpx.AsyncClient) -> None:
    response = await many(client, ("a", 0.0, 3), ("b", 0.0), ("a", 0.1))
    refused, applied, behind = response.json()["results"]
    assert refused["error"]["details"] == {"expected_step": 0}
    assert applied["step"] == 1
    assert behind["error"]["details"] == {"expected_step": 0}
    assert (await client.get("/sessions/a")).status_code == 404


async def test_steps_are_counted_once(client: httpx.AsyncClient) -> None:
    def steps(text: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith("forecast_steps_total"))
        return float(line.split()[-1])

    before = steps((await client.get("/metrics")).text)
    body = (("a", 0.0, 0), ("b", 0.0, 0), ("a", 0.1, 1))
    await many(client, *body)
    await many(client, *body)  # a replay: nothing new
    assert steps((await client.get("/metrics")).text) == before + 3


@pytest.mark.parametrize("count", [3, 4], ids=["at-limit", "over-limit"])
async def test_item_limit(tutorial_models_dir: Path, tutorial_model: ModelSlot, count: int) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory", max_items_per_request=3)
    async with asgi_client(settings, tutorial_model) as client:
        response = await many(client, *((f"s{i}", 0.0) for i in range(count)))
    if count == 3:
        assert response.status_code == 200
    else:
        assert response.status_code == 422
        assert response.json()["error"]["message"] == (
            "items has 4 items; send at most 3 per request"
        )


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [{"session_id": "a"}]},
        {"items": [{"session_id": "a", "value": 1.0, "levels": [50]}]},
        {"items": [{"session_id": "a/b", "value": 1.0}]},
        {"items": [{"session_id": "a", "value": 1.0, "step": -1}]},
        {"items": {"session_id": "a", "value": 1.0}},
    ],
    ids=["empty", "no-value", "item-levels", "bad-id", "negative-step", "not-a-list"],
)
async def test_bad_bodies_are_refused_whole(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, body: dict[str, Any]
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory")
    async with asgi_client(settings, tutorial_model) as client:
        response = await client.post("/predict/many", json=body)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"
        assert (await client.get("/sessions/a")).status_code == 404


async def test_new_session_over_the_cap_fails_alone(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, tmp_path: Path
) -> None:
    settings = Settings(
        model_dir=tutorial_models_dir, store="sqlite", data_dir=tmp_path, max_sessions=2
    )
    async with asgi_client(settings, tutorial_model) as client:
        response = await many(client, ("a", 0.0), ("b", 0.0), ("c", 0.0), ("a", 0.1))
        assert response.status_code == 207
        results = response.json()["results"]
        assert [r.get("step") for r in results] == [1, 1, None, 2]
        assert results[2]["error"]["code"] == "session_limit_reached"


async def test_api_keys_keep_namespaces_apart(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory", api_keys="one,two")
    async with asgi_client(settings, tutorial_model) as client:
        for key in ("one", "one", "two"):
            await client.post(
                "/predict/many",
                json=items(("s", 0.0)),
                headers={"authorization": f"Bearer {key}"},
            )
        steps = [
            (await client.get("/sessions/s", headers={"authorization": f"Bearer {key}"})).json()[
                "step"
            ]
            for key in ("one", "two")
        ]
        unauthorised = await client.post("/predict/many", json=items(("s", 0.0)))
    assert steps == [2, 1]
    assert unauthorised.status_code == 401
