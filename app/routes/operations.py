"""Liveness, readiness, the served model, and Prometheus metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

from app.errors import PlotNotFound, StoreUnavailable
from app.metrics import CONTENT_TYPE
from app.model_registry import ServedModel
from app.responses import JsonLineResponse
from app.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelChangeInfo,
    ModelInfo,
    ModelsResponse,
    ReadyResponse,
    RefusedArtifact,
    ReloadResponse,
)
from app.scopes import ADMIN_ONLY, ADMIN_RESPONSES
from app.services import ServicesHolder
from forecast_core.artifact import EVALUATION_PLOT, MODEL_NAME_PATTERN, Manifest

# Paths that answer without an API key (see app.auth).
HEALTH_PATH = "/health"


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def _refused(served: ServedModel) -> RefusedArtifact | None:
    refused = served.refused
    if refused is None:
        return None
    return RefusedArtifact(
        artifact=refused.artifact, reason=refused.reason, at=_iso(refused.at) or ""
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
ModelNamePath = Annotated[str, PathParam(pattern=MODEL_NAME_PATTERN, description="a served model")]


def _manifest(served: ServedModel) -> JsonLineResponse:
    body: dict[str, Any] = served.require().manifest.model_dump(mode="json")
    refused = _refused(served)
    if refused is not None:
        body["refused"] = refused.model_dump()
    return JsonLineResponse(body)


def model_info(served: ServedModel) -> ModelInfo:
    """What ``GET /models`` says of one model."""
    return ModelInfo(
        name=served.name,
        version=served.version,
        ready=served.forecaster is not None,
        artifact=served.artifact,
        loaded_at=_iso(served.loaded_at),
        problem=served.problem,
        refused=_refused(served),
    )


class ServedManifest(Manifest):
    """The served manifest; ``refused`` appears when a newer artifact failed its checks."""

    refused: RefusedArtifact | None = None


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
        problems = [f"model: {problem}" for problem in services.models.problems()]
        try:
            await services.store.ping()
        except StoreUnavailable as error:
            problems.append(f"store: {error.message}")
        served = {model.name: model for model in services.models.all()}
        default = served.get("default")
        body = ReadyResponse(
            ready=not problems,
            model_version=default.version if default is not None else None,
            store=services.store.name,
            problems=problems,
        )
        return JsonLineResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @router.get("/model", response_model=ServedManifest)
    async def model() -> JsonLineResponse:
        """The default model's manifest: version, hyperparameters, training metrics; and, when
        a newer artifact failed its checks, ``refused``: which and why."""
        return _manifest(holder.services.models.get(None))

    @router.get("/models/{name}/manifest", response_model=ServedManifest, responses=_NOT_FOUND)
    async def named_model(name: ModelNamePath) -> JsonLineResponse:
        """A served model's manifest, as ``/model`` gives the default's."""
        return _manifest(holder.services.models.get(name))

    @router.get(
        "/models/{name}/evaluation.png",
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}}}, **_NOT_FOUND},
    )
    async def evaluation_plot(name: ModelNamePath) -> FileResponse:
        """The evaluation figure the training job saved with the served artifact."""
        served = holder.services.models.get(name)
        served.require()
        path = Path(served.artifact) / EVALUATION_PLOT if served.artifact else None
        if path is None or not await anyio.Path(path).is_file():
            raise PlotNotFound(name)
        return FileResponse(path, media_type="image/png")

    @router.get("/models")
    async def models() -> ModelsResponse:
        """Every served model by name: its version, where it came from, and any refusal."""
        return ModelsResponse(models=[model_info(m) for m in holder.services.models.all()])

    @router.post("/models/reload", dependencies=ADMIN_ONLY)
    async def reload_models() -> ReloadResponse:
        """Look at the models folder now (as the poller does every FORECAST_MODEL_POLL_S):
        load, check and swap in every changed model; say what changed and what was refused."""
        registry = holder.services.models
        changes = await anyio.to_thread.run_sync(registry.refresh)
        return ReloadResponse(
            changes=[
                ModelChangeInfo(
                    name=change.name,
                    previous_version=change.previous_version,
                    version=change.version,
                    refused=change.refused,
                )
                for change in changes
            ],
            models=[model_info(m) for m in registry.all()],
        )

    # Admin only: the totals of every tenant (sessions, requests) are not one tenant's to see.
    @router.get("/metrics", response_class=Response, dependencies=ADMIN_ONLY)
    async def metrics() -> Response:
        """Prometheus text format (an admin key, when keys are set); every worker's numbers."""
        services = holder.services
        try:
            services.metrics.active_sessions.set(await services.store.count())
        except StoreUnavailable:
            pass  # the gauge keeps its last value; /ready reports the outage
        services.metrics.model_ready.set(0 if services.models.problems() else 1)
        return Response(await services.metrics.render_all(), media_type=CONTENT_TYPE)

    return router
