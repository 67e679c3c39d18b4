"""The framework's floor for /predict, /predict/many and /stream: the service's HTTP and JSON
work per request, without sessions, model or store.

Each route parses its body with the service's own request model (the configured item limit
included) on the service's one-pass route class, and answers in /predict's shape (two intervals,
one answer per item for /predict/many) with the service's JSON response; ``/stream`` validates
each message as the service does and answers it. The collector and FastAPI's telemetry are set as
the service sets them. Left out, besides sessions: the service's own middleware (keys, metrics,
the body limit), which runs once a request or a socket, not once an item. What the service
serves beyond these rates is what its sessions cost (``bench.many_and_stream --floor``).
"""

# No ``from __future__ import annotations``: FastAPI reads the /predict/many body type, built
# from the settings, from its annotation at definition time (as app.routes.predict_many).

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias

from fastapi import APIRouter, FastAPI, Request
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.collector import collector_tuned_for_serving
from app.json_body_route import JsonBodyRoute
from app.main import NO_TELEMETRY
from app.responses import JsonBytesResponse, json_bytes
from app.schemas import PredictManyRequest, PredictRequest, PredictResponse, RequestBodies
from app.settings import Settings

# A model version as the training job writes them (the answers' length matters, not the value).
_VERSION = "20261129T161326073938Z-d9e0d693"


def _answer(session_id: str, value: float) -> PredictResponse:
    """An answer of /predict's shape and size (its default levels: 80 and 95)."""
    return {
        "session_id": session_id,
        "model": "default",
        "prediction": value,
        "step": 1234,
        "model_version": _VERSION,
        "replayed": False,
        "previous_model_version": None,
        "warmup_values": None,
        "intervals": [
            {"level": 80, "lower": value - 0.0321, "upper": value + 0.0321},
            {"level": 95, "lower": value - 0.0543, "upper": value + 0.0543},
        ],
        "flags": [],
    }


def create_floor_app(settings: Settings | None = None) -> FastAPI:
    """The floor's routes, with the request models the service builds from ``settings`` (the
    environment's by default, as the service's)."""
    bodies = RequestBodies.from_settings(settings if settings is not None else Settings())
    router = APIRouter(route_class=JsonBodyRoute)
    if TYPE_CHECKING:
        PredictManyBody: TypeAlias = PredictManyRequest
    else:
        PredictManyBody = bodies.predict_many

    # Each takes the request, as the service's routes do: that puts them on the one-pass path.
    @router.post("/predict")
    async def predict(body: PredictRequest, request: Request) -> JsonBytesResponse:
        return JsonBytesResponse(_answer(body.session_id, body.value))

    @router.post("/predict/many")
    async def predict_many(body: PredictManyBody, request: Request) -> JsonBytesResponse:
        answers = [_answer(item.session_id, item.value) for item in body.items]
        return JsonBytesResponse({"results": answers})

    @router.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            body = PredictRequest.model_validate_json(message.get("text") or b"")
            answer = _answer(body.session_id, body.value)
            await websocket.send_text(json_bytes(answer).decode())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with collector_tuned_for_serving():  # as the service's lifespan
            yield

    # As the service's app: one flat route table (app.routes.all_routes), FastAPI's telemetry
    # off, no docs routes.
    return FastAPI(
        routes=[*router.routes, WebSocketRoute("/stream", stream)],
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
        docs_url=None,
        redoc_url=None,
    )


app = create_floor_app()
