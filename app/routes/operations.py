"""Liveness, readiness, the served model, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.routing import APIRoute

from app.errors import StoreUnavailable
from app.metrics import CONTENT_TYPE
from app.responses import JsonLineResponse
from app.schemas import ErrorResponse, HealthResponse, ReadyResponse
from app.scopes import ADMIN_ONLY, ADMIN_RESPONSES
from app.services import ServicesHolder
from forecast_core.artifact import Manifest

# Paths that answer without an API key (see app.auth).
HEALTH_PATH = "/health"


def operations_router(holder: ServicesHolder, route_class: type[APIRoute]) -> APIRouter:
    """The operations routes, bound to the app's services."""
    router = APIRouter(
        default_response_class=JsonLineResponse,
        route_class=route_class,
        tags=["operations"],
        responses={
            401: {"model": ErrorResponse},
            429: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
            **ADMIN_RESPONSES,
        },
    )

    # security: [] tells OpenAPI clients (and the docs page) that no key is needed here.
    @router.get(HEALTH_PATH, openapi_extra={"security": []})
    async def health() -> HealthResponse:
        """The process is up (it may still be unable to serve: see /ready). Needs no API key."""
        return HealthResponse(status="ok")

    @router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def ready() -> JsonLineResponse:
        """200 when a checked model is loaded and the session store answers; 503 with why not."""
        services = holder.services
        problems: list[str] = []
        forecaster = services.model.forecaster
        if forecaster is None:
            problems.append(f"model: {services.model.problem}")
        try:
            await services.store.ping()
        except StoreUnavailable as error:
            problems.append(f"store: {error.message}")
        body = ReadyResponse(
            ready=not problems,
            model_version=forecaster.version if forecaster is not None else None,
            store=services.store.name,
            problems=problems,
        )
        return JsonLineResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @router.get("/model")
    async def model() -> Manifest:
        """The served model's manifest: version, hyperparameters, training metrics."""
        return holder.services.model.require().manifest

    # Admin only: the totals of every tenant (sessions, requests) are not one tenant's to see.
    @router.get("/metrics", response_class=Response, dependencies=ADMIN_ONLY)
    async def metrics() -> Response:
        """Prometheus text format (an admin key, when keys are set)."""
        services = holder.services
        try:
            services.metrics.active_sessions.set(await services.store.count())
        except StoreUnavailable:
            pass  # the gauge keeps its last value; /ready reports the outage
        services.metrics.model_ready.set(0 if services.model.forecaster is None else 1)
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    return router
