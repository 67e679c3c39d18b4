"""The app factory and its lifespan; ``uvicorn app.main:app`` serves ``app``."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from app.auth import ApiKeys
from app.errors import ModelCheckFailed
from app.handlers import install_error_handlers
from app.limits import BodySizeLimitMiddleware
from app.metrics import MetricsMiddleware, ServiceMetrics
from app.routes import all_routes
from app.settings import Settings, get_settings
from app.state import AppState, ModelSlot, Services
from app.stores.factory import open_store
from forecast_core.artifact import ArtifactError

logger = logging.getLogger("app")
# The service has its own Prometheus metrics; FastAPI's native OpenTelemetry is opt-in.
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def load_model(settings: Settings) -> ModelSlot:
    """Load, rebuild at batch size 1, and check the model; on failure say why in one line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from app.forecaster import Forecaster
    from forecast_core.artifact import load_artifact

    try:
        artifact = load_artifact(settings.model_dir)
        forecaster = Forecaster.from_artifact(artifact, settings.check_tolerance)
    except (ArtifactError, ModelCheckFailed) as error:
        logger.error("model not loaded, service not ready: %s", error)
        return ModelSlot(forecaster=None, problem=str(error))
    logger.info("serving model %s from %s", forecaster.version, artifact.path)
    return ModelSlot(forecaster=forecaster, problem=None)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; nothing heavy happens until the lifespan starts."""
    settings = settings or get_settings()
    api_keys = ApiKeys(settings.api_keys)
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[AppState]:
        if not api_keys.enabled:
            logger.warning("FORECAST_API_KEYS is empty: the service is open to every caller")
        # TensorFlow import and the Keras check take seconds: keep them off the event loop.
        model = await anyio.to_thread.run_sync(load_model, settings)
        store = await open_store(settings)
        # Everything loaded so far lives until shutdown; freezing it keeps the collector from
        # re-scanning TensorFlow's object graph (100 ms pauses at p99 otherwise).
        gc.collect()
        gc.freeze()
        try:
            services = Services(
                settings=settings, model=model, store=store, metrics=metrics, api_keys=api_keys
            )
            yield AppState(services=services)
        finally:
            await store.close()
            gc.unfreeze()

    app = FastAPI(
        title="Stateful LSTM forecast service",
        summary="One-step-ahead forecasts from a stateful LSTM, one value at a time per session.",
        version="0.1.0",
        lifespan=lifespan,
        routes=all_routes(),
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
    )
    _publish_limits_in_schema(app, settings)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _publish_limits_in_schema(app: FastAPI, settings: Settings) -> None:
    """Put the configured request limits into the OpenAPI schema, so clients can see them."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_schema()
            components = schema["components"]["schemas"]
            batch = components["PredictBatchRequest"]["properties"]["values"]
            batch["maxItems"] = settings.max_values_per_request
            components["ForecastRequest"]["properties"]["horizon"]["maximum"] = settings.max_horizon
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


_configure_logging()
app = create_app()
