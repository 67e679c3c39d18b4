"""The one-pass body route answers every body exactly as FastAPI's own handler does."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import ValidationError

from app.audit import Audit
from app.error_handlers import install_error_handlers
from app.json_body_route import JsonBodyRoute
from app.main import create_app
from app.responses import JsonBytesResponse, JsonLineResponse
from app.schemas import PredictRequest
from app.services import ModelSlot
from app.settings import Settings

JSON = "application/json"


def _echo_app(route_class: type[APIRoute]) -> FastAPI:
    """A route of /predict's shape that answers what it parsed, under the service's handlers."""
    app = FastAPI(default_response_class=JsonLineResponse)
    install_error_handlers(app, Audit(time.time))

    async def echo(body: PredictRequest, request: Request) -> JsonBytesResponse:
        return JsonBytesResponse({"parsed": body.model_dump(), "path": request.url.path})

    app.router.route_class = route_class
    app.post("/echo")(echo)
    (route,) = (r for r in app.routes if isinstance(r, APIRoute) and r.path == "/echo")
    assert getattr(route, "one_pass", False) == (route_class is JsonBodyRoute)
    return app


@pytest.fixture
async def clients() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(one-pass, FastAPI's) clients of the same route."""
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_echo_app(JsonBodyRoute)), base_url="http://t"
        ) as one_pass,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_echo_app(APIRoute)), base_url="http://t"
        ) as fastapi_own,
    ):
        yield one_pass, fastapi_own


BODIES: list[tuple[str, bytes, str | None]] = [
    ("plain", b'{"session_id": "a", "value": 0.25}', JSON),
    ("all-fields", b'{"session_id": "a", "value": 1, "step": 3.0, "levels": [50, 90.5]}', JSON),
    ("exponent", b'{"session_id": "a", "value": -1.2345678901234567e-300}', JSON),
    ("many-digits", b'{"session_id": "a", "value": 0.1000000000000000055511151231257827}', JSON),
    ("duplicate-key", b'{"session_id": "a", "value": 1, "value": 2}', JSON),
    ("charset", b'{"session_id": "a", "value": 1}', "application/json; charset=utf-8"),
    ("vendor-json", b'{"session_id": "a", "value": 1}', "application/vnd.api+json"),
    ("escaped-id", b'{"session_id": "\\u0061b", "value": 1}', JSON),
    ("bool-value", b'{"session_id": "a", "value": true}', JSON),
    ("string-value", b'{"session_id": "a", "value": "1.5"}', JSON),
    ("nan", b'{"session_id": "a", "value": NaN}', JSON),
    ("overflow", b'{"session_id": "a", "value": 1e400}', JSON),
    ("bool-step", b'{"session_id": "a", "value": 1, "step": true}', JSON),
    ("fractional-step", b'{"session_id": "a", "value": 1, "step": 2.5}', JSON),
    ("extra-field", b'{"session_id": "a", "value": 1, "other": 1}', JSON),
    ("bad-id", b'{"session_id": "a b", "value": 1}', JSON),
    ("level-100", b'{"session_id": "a", "value": 1, "levels": [100]}', JSON),
    ("not-json", b"{not json", JSON),
    ("trailing-comma", b'{"session_id": "a", "value": 1,}', JSON),
    ("array", b"[1, 2]", JSON),
    ("empty", b"", JSON),
    ("bad-utf8", b'{"session_id": "\xff", "value": 1}', JSON),
    ("lone-surrogate", b'{"session_id": "\\ud800", "value": 1}', JSON),
    ("utf-16", '{"session_id": "a", "value": 1}'.encode("utf-16"), JSON),
    ("form", b"session_id=a&value=1", "application/x-www-form-urlencoded"),
    ("no-content-type", b'{"session_id": "a", "value": 1}', None),
    ("text-json", b'{"session_id": "a", "value": 1}', "text/json"),
]


@pytest.mark.parametrize(
    ("content", "content_type"), [b[1:] for b in BODIES], ids=[b[0] for b in BODIES]
)
@pytest.mark.anyio
async def test_same_answer_as_fastapi(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], content: bytes, content_type: str | None
) -> None:
    one_pass, fastapi_own = clients
    headers = {} if content_type is None else {"content-type": content_type}
    ours = await one_pass.post("/echo", content=content, headers=headers)
    theirs = await fastapi_own.post("/echo", content=content, headers=headers)
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())


def test_floats_parse_to_the_same_values_as_pythons_json() -> None:
    # pydantic-core parses numbers itself; FastAPI's path uses json.loads. Every float they read
    # must be the same float, to the last bit, or the two paths would forecast differently.
    rng = random.Random(7)
    texts = [repr(rng.uniform(-1e6, 1e6)) for _ in range(500)]
    texts += [f"{rng.uniform(-10, 10):.{rng.randint(1, 25)}f}" for _ in range(500)]
    texts += [f"{rng.uniform(1, 10):.17g}e{rng.randint(-307, 307)}" for _ in range(500)]
    texts += ["5e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "-0.0", "0"]
    for text in texts:
        body = f'{{"session_id": "a", "value": {text}}}'
        expected = PredictRequest.model_validate(json.loads(body))
        assert PredictRequest.model_validate_json(body) == expected, text


def test_one_pass_refuses_what_fastapi_refuses() -> None:
    # The one-pass path hands every refusal to FastAPI; it must never accept a body FastAPI
    # would refuse. Python's json.loads reads NaN, which the model then refuses.
    with pytest.raises(ValidationError):
        PredictRequest.model_validate_json(b'{"session_id": "a", "value": NaN}')


def _routes(settings: Settings, model: ModelSlot) -> dict[str, APIRoute]:
    app = create_app(settings, model=model)
    return {route.path: route for route in app.routes if isinstance(route, APIRoute)}


def test_predict_takes_the_one_pass_path(tmp_path: Path, tutorial_model: ModelSlot) -> None:
    routes = _routes(Settings(model_dir=tmp_path, store="memory"), tutorial_model)
    predict = routes["/predict"]
    assert isinstance(predict, JsonBodyRoute)
    assert predict.one_pass


def test_routes_of_other_shapes_keep_fastapis_handler(
    tmp_path: Path, tutorial_model: ModelSlot
) -> None:
    # /forecast returns a model FastAPI serializes: only FastAPI's handler does that.
    routes = _routes(Settings(model_dir=tmp_path, store="memory"), tutorial_model)
    forecast = routes["/forecast"]
    assert isinstance(forecast, JsonBodyRoute)
    assert not forecast.one_pass


def test_fastapi_telemetry_keeps_fastapis_handler(
    tmp_path: Path, tutorial_model: ModelSlot
) -> None:
    # FastAPI's telemetry records what its own handler does.
    settings = Settings(model_dir=tmp_path, store="memory", opentelemetry=True)
    assert not isinstance(_routes(settings, tutorial_model)["/predict"], JsonBodyRoute)
