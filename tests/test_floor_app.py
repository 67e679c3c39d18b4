"""bench.floor_app, the framework floor of bench.many_and_stream, answers as the service does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from app.json_body_route import JsonBodyRoute
from app.services import ModelSlot
from app.settings import Settings
from bench.floor_app import create_floor_app
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio

ITEM_LIMIT = 3


@pytest.fixture
def settings(tutorial_models_dir: Path, tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "model_dir": tutorial_models_dir,
            "store": "memory",
            "data_dir": tmp_path,
            "max_items_per_request": ITEM_LIMIT,
        }
    )


@pytest.fixture
async def service(
    settings: Settings, tutorial_model: ModelSlot
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, tutorial_model) as client:
        yield client


@pytest.fixture
async def floor(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_floor_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _shape(answer: Any) -> Any:
    """The keys and value types of an answer, nested (what serialising it costs)."""
    if isinstance(answer, dict):
        return {key: _shape(value) for key, value in answer.items()}
    if isinstance(answer, list):
        return [_shape(value) for value in answer]
    return type(answer).__name__


async def test_its_answers_have_the_shape_of_the_service_answers(
    service: httpx.AsyncClient, floor: httpx.AsyncClient
) -> None:
    first = {"items": [{"session_id": "a", "value": 0.5}, {"session_id": "b", "value": 0.25}]}
    forecasts = (await service.post("/predict/many", json=first)).json()["results"]
    # Each session's next value is its forecast: judged, in its intervals, no flag.
    body = {"items": [{"session_id": r["session_id"], "value": r["prediction"]} for r in forecasts]}
    served = (await service.post("/predict/many", json=body)).json()
    floored = (await floor.post("/predict/many", json=body)).json()
    assert _shape(floored) == _shape(served)


async def test_it_refuses_the_bodies_the_service_refuses(
    service: httpx.AsyncClient, floor: httpx.AsyncClient
) -> None:
    too_many = {"items": [{"session_id": f"s{i}", "value": 1.0} for i in range(ITEM_LIMIT + 1)]}
    served = await service.post("/predict/many", json=too_many)
    floored = await floor.post("/predict/many", json=too_many)
    assert (floored.status_code, served.status_code) == (422, 422)


@pytest.mark.parametrize("path", ["/predict", "/predict/many"])
def test_its_routes_take_the_one_pass_path_as_the_service_routes_do(
    settings: Settings, path: str
) -> None:
    routes = {r.path: r for r in create_floor_app(settings).routes if isinstance(r, APIRoute)}
    route = routes[path]
    assert isinstance(route, JsonBodyRoute) and route.one_pass
