"""Session life cycle: reset, inspect, delete."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from app.auth import model_and_session_of, namespace_prefix, store_key
from app.errors import ServiceError, SessionNotFound
from app.intervals import IntervalPolicy
from app.responses import JsonLineResponse
from app.schemas import (
    MODEL_NAME_PATTERN,
    SESSION_ID,
    DeleteResponse,
    ErrorResponse,
    HistoryValue,
    Interval,
    NextForecast,
    ResetResponse,
    SessionHistory,
    SessionInfo,
    SessionRequest,
    SessionSkill,
    SessionsPage,
)
from app.services import Services, ServicesHolder
from app.session_history import as_array
from app.session_rules import SessionRecord, reset
from app.settings import MAX_SESSIONS_PAGE
from forecast_core.arrays import FloatArray
from forecast_core.lstm_step import finite

SessionIdPath = Annotated[str, Path(pattern=SESSION_ID.pattern, description=SESSION_ID.description)]
ModelQuery = Annotated[
    str | None,
    Query(
        pattern=MODEL_NAME_PATTERN,
        description="the session's model (GET /models lists them); default: 'default'",
    ),
]


def _row_intervals(row: FloatArray, levels: tuple[float, ...]) -> list[Interval]:
    """A history row's intervals, labelled with the configured levels (none if its radii are
    of other levels, or missing)."""
    if row.shape[0] != 2 + len(levels) or math.isnan(row[1]):
        return []
    forecast = float(row[1])
    intervals: list[Interval] = []
    for level, radius in zip(levels, row[2:].tolist(), strict=True):
        if math.isnan(radius):
            return []
        intervals.append(
            {"level": level, "lower": finite(forecast - radius), "upper": finite(forecast + radius)}
        )
    return intervals


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


class SessionsQuery(BaseModel):
    """GET /sessions' query: a page size and where to go on from; nothing else is accepted."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=MAX_SESSIONS_PAGE, description="sessions a page")
    cursor: str | None = Field(
        default=None, max_length=1000, description="the previous page's next_cursor"
    )


def _info(
    services: Services,
    model: str,
    intervals: IntervalPolicy | None,
    session_id: str,
    record: SessionRecord,
) -> SessionInfo:
    """What GET /sessions shows of a session (``intervals``: its served model's policy; None
    for a model no longer served, whose skill cannot be read)."""
    return SessionInfo(
        session_id=session_id,
        model=model,
        step=record.step,
        created_at=_iso(record.created_at),
        last_used_at=_iso(record.last_used_at),
        expires_at=_iso(record.last_used_at + services.settings.session_ttl_s),
        model_version=record.model_version,
        last_prediction=record.last_predictions[-1] if record.last_predictions else None,
        skill=(
            intervals.skill(record.tracking)
            if intervals is not None
            else SessionSkill(life=None, recent=None)
        ),
    )


def _listed(services: Services, key: str, prefix: str, record: SessionRecord) -> SessionInfo:
    model, session_id = model_and_session_of(key, prefix)
    try:
        served = services.models.get(model)
    except ServiceError:  # a model no longer served (or none loaded yet)
        return _info(services, model, None, session_id, record)
    return _info(services, served.name, served.intervals, session_id, record)


def sessions_router(holder: ServicesHolder, route_class: type[APIRoute]) -> APIRouter:
    """The session routes, bound to the app's services."""
    router = APIRouter(
        default_response_class=JsonLineResponse,
        route_class=route_class,
        tags=["sessions"],
        responses={status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 429, 503)},
    )

    @router.post("/reset")
    async def reset_session(body: SessionRequest, request: Request) -> ResetResponse:
        """Clear a session's state and count; an unknown session is fine."""
        services = holder.services
        served = services.models.get(body.model)
        forecaster = served.require()
        now = services.clock()
        policy = served.intervals

        def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, None]:
            # Unknown: nothing to clear, and no record to count against the session cap.
            return (reset(record, forecaster, policy, now) if record is not None else None), None

        await services.store.apply(store_key(request.scope, body.session_id, body.model), compute)
        return ResetResponse(session_id=body.session_id, step=0)

    @router.get("/sessions")
    async def list_sessions(
        request: Request, page_query: Annotated[SessionsQuery, Query()]
    ) -> SessionsPage:
        """The caller's sessions (only those its key can see), a page at a time: pass each
        page's ``next_cursor`` as ``cursor`` for the next. Pages of the Redis stores follow
        Redis' SCAN: a session that lives throughout shows at least once."""
        services = holder.services
        prefix = namespace_prefix(request.scope)
        page, following = await services.store.list_page(
            prefix, page_query.cursor, page_query.limit
        )
        return SessionsPage(
            sessions=[_listed(services, key, prefix, record) for key, record in page],
            next_cursor=following,
        )

    @router.get("/sessions/{session_id}")
    async def session_info(
        session_id: SessionIdPath, request: Request, model: ModelQuery = None
    ) -> SessionInfo:
        """A session's step, times, model version and live skill."""
        services = holder.services
        served = services.models.get(model)
        record = await services.store.get(store_key(request.scope, session_id, model))
        if record is None:
            raise SessionNotFound(session_id)
        return _info(services, served.name, served.intervals, session_id, record)

    @router.get("/sessions/{session_id}/history")
    async def session_history(
        session_id: SessionIdPath, request: Request, model: ModelQuery = None
    ) -> SessionHistory:
        """A session's history window: its last values (at most FORECAST_SESSION_HISTORY) with
        their steps, the one-step forecast served for each and its intervals; then the forecast
        of its next value."""
        services = holder.services
        served = services.models.get(model)
        record = await services.store.get(store_key(request.scope, session_id, model))
        if record is None:
            raise SessionNotFound(session_id)
        levels = services.settings.interval_level_values
        rows = as_array(record.history)
        values: list[HistoryValue] = []
        upcoming = None
        if rows is not None and rows.shape[0] > 0:
            first = record.step - (rows.shape[0] - 1) + 1
            for index, row in enumerate(rows[:-1]):
                forecast = float(row[1])
                values.append(
                    HistoryValue(
                        step=first + index,
                        value=float(row[0]),
                        forecast=None if math.isnan(forecast) else forecast,
                        intervals=_row_intervals(row, levels),
                    )
                )
            last = rows[-1]
            if not math.isnan(last[1]):
                upcoming = NextForecast(
                    step=record.step + 1,
                    forecast=float(last[1]),
                    intervals=_row_intervals(last, levels),
                )
        return SessionHistory(
            session_id=session_id,
            model=served.name,
            model_version=record.model_version,
            step=record.step,
            values=values,
            next=upcoming,
        )

    @router.delete("/sessions/{session_id}")
    async def delete_session(
        session_id: SessionIdPath, request: Request, model: ModelQuery = None
    ) -> DeleteResponse:
        """Forget a session entirely; ``deleted`` is false when there was none (safe to retry)."""
        services = holder.services
        if model is not None:
            services.models.get(model)  # an unknown model is 404, as everywhere
        deleted = await services.store.delete(store_key(request.scope, session_id, model))
        return DeleteResponse(session_id=session_id, deleted=deleted)

    return router
