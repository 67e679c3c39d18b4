"""Liveness, readiness, the served model, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.dependencies import caller_of
from app.errors import StoreUnavailable
from app.metrics import CONTENT_TYPE
from app.schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(
    tags=["operations"],
    responses={401: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)


@router.get("/health")
async def health() -> HealthResponse:
    """The process is up (it may still be unable to serve: see /ready). Needs no API key."""
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(request: Request) -> JSONResponse:
    """200 when a checked model is loaded and the session store answers; 503 with why not."""
    caller = caller_of(request)
    problems: list[str] = []
    forecaster = caller.services.model.forecaster
    if forecaster is None:
        problems.append(f"model: {caller.services.model.problem}")
    try:
        await caller.services.store.ping()
    except StoreUnavailable as error:
        problems.append(f"store: {error.message}")
    body = ReadyResponse(
        ready=not problems,
        model_version=forecaster.version if forecaster is not None else None,
        store=caller.services.store.name,
        problems=problems,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/model")
async def model(request: Request) -> dict[str, Any]:
    """The served model's manifest: version, hyperparameters, training metrics."""
    caller = caller_of(request)
    return caller.forecaster.manifest.model_dump()


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    caller = caller_of(request)
    try:
        caller.services.metrics.active_sessions.set(await caller.services.store.count())
    except StoreUnavailable:
        pass  # the gauge keeps its last value; /ready reports the outage
    service_metrics = caller.services.metrics
    service_metrics.model_ready.set(0 if caller.services.model.forecaster is None else 1)
    return Response(service_metrics.render(), media_type=CONTENT_TYPE)
