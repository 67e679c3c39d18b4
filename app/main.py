"""The app factory and its lifespan; ``uvicorn app.main:app`` serves ``app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from uvicorn.config import STARTUP_FAILURE

from app.audit import Audit
from app.auth import ApiKeys, AuthMiddleware
from app.body_limit import BodySizeLimitMiddleware
from app.collector import collector_tuned_for_serving
from app.docs import docs_paths, docs_routes
from app.error_handlers import install_error_handlers
from app.json_body_route import JsonBodyRoute
from app.keys import parse_env_keys
from app.keys_file import KeysFileError, KeysFileWatcher, describe, load_keys_file
from app.metrics import MetricsMiddleware, ServiceMetrics
from app.metrics_share import METRICS_SHARE_INTERVAL_S, MetricsShare
from app.model_registry import ModelRegistry, find_models
from app.openapi import declare_bearer_security
from app.rate_limit import RateLimiter
from app.responses import JsonLineResponse
from app.routes import all_routes
from app.routes.operations import HEALTH_PATH
from app.routes.stream import STREAM_PATH
from app.routes.stream_batch import StreamBatcher
from app.schemas import DEFAULT_MODEL, RequestBodies
from app.services import ModelSlot, Services, ServicesHolder
from app.settings import Settings, get_settings
from app.stores.base import SessionStore
from app.stores.factory import open_store
from app.ui import ui_paths, ui_routes
from app.workers import split_sessions_reason, uvicorn_workers

logger = logging.getLogger("app")
# Seconds the shutdown waits for the background tasks (keys file, replica heartbeat) to stop.
_BACKGROUND_STOP_S = 1.0
# The service has its own Prometheus metrics; FastAPI's native OpenTelemetry is opt-in.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def load_models(settings: Settings, clock: Callable[[], float]) -> ModelRegistry:
    """Find, load and check every model in the models folder (blocking: TensorFlow)."""
    registry = ModelRegistry(settings, clock=clock)
    registry.refresh()
    if not registry.all():
        logger.error("model not loaded, service not ready: %s", registry.problems()[0])
    return registry


async def watch_models(registry: ModelRegistry, wait: Callable[[], Awaitable[object]]) -> None:
    """Look for changed models after every ``wait()``, until cancelled; never fails."""
    while True:
        await wait()
        try:
            await anyio.to_thread.run_sync(registry.refresh)
        except Exception:  # a bad artifact or an unreadable folder must not stop the watch
            logger.exception("looking for changed models failed; trying again later")


async def publish_metrics(metrics: ServiceMetrics, interval_s: float) -> None:
    """Write this worker's metrics for the other workers every ``interval_s`` until cancelled;
    a write that fails is logged (once, until one succeeds again) and tried again next time."""
    failing = False
    while True:
        try:
            await metrics.publish()
        except OSError as error:
            if not failing:
                logger.warning(
                    "cannot write this worker's metrics for the others (%s); /metrics answered "
                    "by another worker misses its latest counts until this is fixed",
                    error,
                )
            failing = True
        else:
            if failing:
                logger.info("this worker's metrics are written for the others again")
            failing = False
        await asyncio.sleep(interval_s)


def create_app(
    settings: Settings | None = None,
    *,
    model: ModelSlot | None = None,
    store: SessionStore | None = None,
    clock: Callable[[], float] = time.time,
    poll_wait: Callable[[], Awaitable[object]] | None = None,
) -> FastAPI:
    """Build the service; nothing heavy happens until the lifespan starts.

    ``model`` and ``store``, when given, are used as they are (a test's already-checked default
    model, a store it built): the lifespan then neither loads the one (other named models in the
    folder are loaded) nor opens or closes the other. ``clock`` tells the time to sessions and
    stores. ``poll_wait`` is awaited before each look for changed models (default: sleep
    ``FORECAST_MODEL_POLL_S``; with 0, no polling, only ``POST /models/reload``).
    """
    settings = settings or get_settings()
    defaults = settings.key_defaults()
    keys_watcher: KeysFileWatcher | None = None
    limiter = RateLimiter(clock)
    if settings.api_keys_file is not None:
        loaded, table = load_keys_file(settings.api_keys_file, defaults)  # KeysFileError
        api_keys = ApiKeys(table)
        keys_watcher = KeysFileWatcher(settings.api_keys_file, defaults, api_keys, limiter, loaded)
    else:
        api_keys = ApiKeys(parse_env_keys(settings.api_keys, defaults))
    share = MetricsShare(settings.metrics_share_dir) if settings.metrics_share_dir else None
    metrics = ServiceMetrics(share, clock)
    audit = Audit(clock)
    metrics.registry.register(audit)
    holder = ServicesHolder()
    stream_batcher = StreamBatcher(holder, STREAM_PATH, audit, settings.max_items_per_request)

    def quota(namespace: str) -> int | None:
        # The keys in force now: a rotated file changes quotas for the next new session.
        return api_keys.table.quota(namespace)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not api_keys.enabled:
            logger.warning("FORECAST_API_KEYS is empty: the service is open to every caller")
        else:
            logger.info("serving %s", describe(api_keys.table, settings.max_sessions))
        # TensorFlow import and the Keras check take seconds: keep them off the event loop.
        if model is not None:
            registry = ModelRegistry(settings, clock=clock)
            pointer = find_models(settings.model_dir).get(DEFAULT_MODEL)
            await anyio.to_thread.run_sync(registry.install, DEFAULT_MODEL, model, pointer)
            await anyio.to_thread.run_sync(registry.refresh)  # the folder's other models
        else:
            registry = await anyio.to_thread.run_sync(load_models, settings, clock)
        sessions = store if store is not None else await open_store(settings, clock, quota)
        background = _background_tasks(settings, keys_watcher, limiter, metrics)
        with collector_tuned_for_serving():
            holder.fill(Services(settings, registry, sessions, metrics, clock))
            wait = poll_wait
            if wait is None and settings.model_poll_s > 0:
                wait = _sleeper(settings.model_poll_s)
            model_watcher = asyncio.create_task(watch_models(registry, wait)) if wait else None
            try:
                yield
            finally:
                if model_watcher is not None:
                    model_watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await model_watcher
                holder.fill(None)
                for task in background:
                    task.cancel()
                if background:
                    # Bounded: a Redis call caught mid-way must not hold up the shutdown.
                    await asyncio.wait(background, timeout=_BACKGROUND_STOP_S)
                # The batch being applied still uses the store; bounded as the background tasks.
                await stream_batcher.stop(_BACKGROUND_STOP_S)
                # Last, with every step counted: a stopped worker's counts still count.
                with contextlib.suppress(OSError):
                    await metrics.publish()
                if store is None:
                    await sessions.close()

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
            lambda: api_keys.table,
            audit,
            stream_batcher,
        ),
        telemetry=None if settings.opentelemetry else NO_TELEMETRY,
        default_response_class=JsonLineResponse,
        # FastAPI's docs pages load their scripts from a CDN; app.docs serves Swagger UI's files
        # itself, and ReDoc (CDN only) is left out.
        docs_url=None,
        redoc_url=None,
    )
    # The keys file's watcher (None without a file): it runs in the lifespan; tests call it.
    app.state.keys_watcher = keys_watcher
    app.state.stream_batcher = stream_batcher  # tests call it
    if app.openapi_url:
        app.router.routes.extend(docs_routes(app.title, app.openapi_url))
    app.router.routes.extend(ui_routes())
    if api_keys.enabled:
        declare_bearer_security(app)
    install_error_handlers(app, audit)
    # Added last is outermost: metrics see every answer, authentication comes before the body.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        AuthMiddleware,
        api_keys=api_keys,
        open_paths=_open_paths(app),
        limiter=limiter,
        audit=audit,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _sleeper(seconds: float) -> Callable[[], Awaitable[None]]:
    async def wait() -> None:
        await asyncio.sleep(seconds)

    return wait


def _background_tasks(
    settings: Settings,
    watcher: KeysFileWatcher | None,
    limiter: RateLimiter,
    metrics: ServiceMetrics,
) -> list[asyncio.Task[None]]:
    """The keys file's watcher, with Redis the heartbeat that shares rate limits out (when any
    key can have a rate: a default one, or a keys file that may give one), and with a metrics
    share the writing of this worker's metrics for the others."""
    tasks = []
    if metrics.share is not None:
        tasks.append(asyncio.create_task(publish_metrics(metrics, METRICS_SHARE_INTERVAL_S)))
    if watcher is not None:
        tasks.append(asyncio.create_task(watcher.run(settings.api_keys_reload_s)))
    rates_possible = bool(settings.rate_limit.strip()) or watcher is not None
    if settings.store == "redis" and rates_possible:
        from app.replica_peers import HEARTBEAT_S, ReplicaPeers

        peers = ReplicaPeers(settings.redis_url, settings.redis_prefix, limiter, HEARTBEAT_S)

        async def beat_until_stopped() -> None:
            try:
                await peers.run()
            finally:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(peers.close(), _BACKGROUND_STOP_S)

        tasks.append(asyncio.create_task(beat_until_stopped()))
    return tasks


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


def _create_or_refuse() -> FastAPI:
    """The app, or one line saying what is wrong with the keys file and a start-up failure."""
    try:
        return create_app()
    except KeysFileError as error:
        logger.error("%s", error)
        sys.exit(STARTUP_FAILURE)


_configure_logging()
_refuse_split_sessions(get_settings())
app = _create_or_refuse()
