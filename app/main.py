"""The app factory and its lifespan; ``uvicorn app.main:app`` serves ``app``."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from uvicorn.config import STARTUP_FAILURE

from app.auth import ApiKeys, AuthMiddleware
from app.body_limit import BodySizeLimitMiddleware
from app.docs import docs_paths, docs_routes
from app.error_handlers import install_error_handlers
from app.errors import ModelCheckFailed
from app.json_body_route import JsonBodyRoute
from app.metrics import MetricsMiddleware, ServiceMetrics
from app.openapi import declare_bearer_security
from app.responses import JsonLineResponse
from app.routes import all_routes
from app.routes.operations import HEALTH_PATH
from app.schemas import RequestBodies
from app.services import ModelSlot, Services, ServicesHolder
from app.settings import Settings, get_settings
from app.stores.base import SessionStore
from app.stores.factory import open_store
from app.ui import ui_paths, ui_routes
from app.workers import split_sessions_reason, uvicorn_workers
from forecast_core.artifact import ArtifactError
from forecast_core.quiet_tensorflow import quiet_tensorflow

logger = logging.getLogger("app")
# The service has its own Prometheus metrics; FastAPI's native OpenTelemetry is opt-in.
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def load_model(settings: Settings) -> ModelSlot:
    """Load, rebuild at batch size 1, and check the model; on failure say why in one line."""
    quiet_tensorflow()
    from app.forecaster import Forecaster
    from forecast_core.artifact import load_artifact

    try:
        artifact = load_artifact(settings.model_dir)
        forecaster = Forecaster.from_artifact(artifact, settings.check_tolerance)
    except (ArtifactError, ModelCheckFailed) as error:
        logger.error("model not loaded, service not ready: %s", error)
        return ModelSlot(forecaster=None, problem=str(error))
    logger.info("serving model %s from %s", forecaster.version, artifact.path)
    return ModelSlot(forecaster=forecaster)


def create_app(
    settings: Settings | None = None,
    *,
    model: ModelSlot | None = None,
    store: SessionStore | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the service; nothing heavy happens until the lifespan starts.

    ``model`` and ``store``, when given, are used as they are (a test's already-checked model, a
    store it built): the lifespan then neither loads the one nor opens or closes the other.
    ``clock`` tells the time to sessions and stores.
    """
    settings = settings or get_settings()
    api_keys = ApiKeys(settings.api_keys)
    metrics = ServiceMetrics()
    holder = ServicesHolder()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not api_keys.enabled:
            logger.warning("FORECAST_API_KEYS is empty: the service is open to every caller")
        # TensorFlow import and the Keras check take seconds: keep them off the event loop.
        served = (
            model if model is not None else await anyio.to_thread.run_sync(load_model, settings)
        )
        sessions = store if store is not None else await open_store(settings, clock)
        # Everything loaded so far lives until shutdown; freezing it keeps the collector from
        # re-scanning TensorFlow's object graph, which showed as long pauses at p99.
        gc.collect()
        gc.freeze()
        services = await anyio.to_thread.run_sync(
            Services.build, settings, served, sessions, metrics, clock
        )
        holder.fill(services)
        try:
            yield
        finally:
            holder.fill(None)
            if store is None:
                await sessions.close()
            gc.unfreeze()

    app = FastAPI(
        title="Stateful LSTM forecast service",
        summary="One-step-ahead forecasts from a stateful LSTM, one value at a time per session.",
        version="0.1.0",
        lifespan=lifespan,
        routes=all_routes(
            holder,
            RequestBodies.from_settings(settings),
            # FastAPI's telemetry records what its own request handler does.
            APIRoute if settings.opentelemetry else JsonBodyRoute,
        ),
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
        default_response_class=JsonLineResponse,
        # FastAPI's docs pages load their scripts from a CDN; app.docs serves Swagger UI's files
        # itself, and ReDoc (CDN only) is left out.
        docs_url=None,
        redoc_url=None,
    )
    if app.openapi_url:
        app.router.routes.extend(docs_routes(app.title, app.openapi_url))
    app.router.routes.extend(ui_routes())
    if api_keys.enabled:
        declare_bearer_security(app)
    install_error_handlers(app)
    # Added last is outermost: metrics see every answer, authentication comes before the body.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, api_keys=api_keys, open_paths=_open_paths(app))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _open_paths(app: FastAPI) -> set[str]:
    """Paths that need no API key: liveness, the docs and the pages' files (they hold no session
    data; the pages' API calls need a key like any client's)."""
    return {
        HEALTH_PATH,
        *docs_paths(),
        *ui_paths(),
        *([app.openapi_url] if app.openapi_url else []),
    }


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def _refuse_split_sessions(settings: Settings) -> None:
    """Exit before serving when the store cannot be shared by uvicorn's workers.

    At import, not in the lifespan: uvicorn stops all workers on this exit code (a failing
    lifespan would print a traceback instead of the one line).
    """
    reason = split_sessions_reason(settings.store, uvicorn_workers())
    if reason is not None:
        logger.error(reason)
        sys.exit(STARTUP_FAILURE)


_configure_logging()
_refuse_split_sessions(get_settings())
app = create_app()
