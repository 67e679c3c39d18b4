"""Liveness, readiness, the served model, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.dependencies import ForecasterDep, MetricsDep, StoreDep, get_tenant
from app.errors import StoreUnavailable
from app.metrics import CONTENT_TYPE
from app.schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])
# Everything but /health needs a key when keys are configured.
guarded = APIRouter(
    tags=["operations"],
    dependencies=[Depends(get_tenant)],
    responses={401: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)


@router.get("/health")
async def health() -> HealthResponse:
    """The process is up (it may still be loading or unable to serve: see /ready)."""
    return HealthResponse(status="ok")


@guarded.get("/ready", responses={503: {"model": ReadyResponse}})
async def ready(request: Request, store: StoreDep) -> JSONResponse:
    """200 when a checked model is loaded and the session store answers; 503 with why not."""
    problems: list[str] = []
    slot = request.state.model
    if slot.forecaster is None:
        problems.append(f"model: {slot.problem}")
    try:
        await store.ping()
    except StoreUnavailable as error:
        problems.append(f"store: {error.message}")
    body = ReadyResponse(
        ready=not problems,
        model_version=slot.forecaster.version if slot.forecaster is not None else None,
        store=store.name,
        problems=problems,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@guarded.get("/model")
async def model(forecaster: ForecasterDep) -> dict[str, Any]:
    """The served model's manifest: version, hyperparameters, training metrics."""
    return forecaster.manifest.model_dump()


@guarded.get("/metrics", response_class=Response)
async def metrics(request: Request, service_metrics: MetricsDep, store: StoreDep) -> Response:
    """Prometheus text format."""
    try:
        service_metrics.active_sessions.set(await store.count())
    except StoreUnavailable:
        pass  # the gauge keeps its last value; /ready reports the outage
    service_metrics.model_ready.set(1 if request.state.model.forecaster is not None else 0)
    return Response(service_metrics.render(), media_type=CONTENT_TYPE)
