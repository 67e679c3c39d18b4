"""Session life cycle: reset, inspect, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.routing import APIRoute

from app.auth import namespace_prefix, session_id_of, store_key
from app.errors import SessionNotFound
from app.responses import JsonLineResponse
from app.schemas import (
    SESSION_ID,
    DeleteResponse,
    ErrorResponse,
    ResetResponse,
    SessionInfo,
    SessionRequest,
    SessionsPage,
)
from app.services import Services, ServicesHolder
from app.session_rules import SessionRecord, reset
from app.settings import MAX_SESSIONS_PAGE

SessionIdPath = Annotated[str, Path(pattern=SESSION_ID.pattern, description=SESSION_ID.description)]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _info(services: Services, session_id: str, record: SessionRecord) -> SessionInfo:
    return SessionInfo(
        session_id=session_id,
        step=record.step,
        created_at=_iso(record.created_at),
        last_used_at=_iso(record.last_used_at),
        expires_at=_iso(record.last_used_at + services.settings.session_ttl_s),
        model_version=record.model_version,
        last_prediction=record.last_predictions[-1] if record.last_predictions else None,
        skill=services.intervals.skill(record.tracking),
    )


def sessions_router(holder: ServicesHolder, route_class: type[APIRoute]) -> APIRouter:
    """The session routes, bound to the app's services."""
    router = APIRouter(
        default_response_class=JsonLineResponse,
        route_class=route_class,
        tags=["sessions"],
        responses={status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 503)},
    )

    @router.post("/reset")
    async def reset_session(body: SessionRequest, request: Request) -> ResetResponse:
        """Clear a session's state and count; an unknown session is fine."""
        services = holder.services
        forecaster = services.model.require()
        now = services.clock()

        policy = services.intervals

        def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, None]:
            # Unknown: nothing to clear, and no record to count against the session cap.
            return (reset(record, forecaster, policy, now) if record is not None else None), None

        await services.store.apply(store_key(request.scope, body.session_id), compute)
        return ResetResponse(session_id=body.session_id, step=0)

    @router.get("/sessions")
    async def list_sessions(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_SESSIONS_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> SessionsPage:
        """The caller's sessions (only those its key can see), a page at a time: pass each
        page's ``next_cursor`` as ``cursor`` for the next. Pages of the Redis stores follow
        Redis' SCAN: a session that lives throughout shows at least once."""
        services = holder.services
        prefix = namespace_prefix(request.scope)
        page, following = await services.store.list_page(prefix, cursor, limit)
        return SessionsPage(
            sessions=[_info(services, session_id_of(key, prefix), record) for key, record in page],
            next_cursor=following,
        )

    @router.get("/sessions/{session_id}")
    async def session_info(session_id: SessionIdPath, request: Request) -> SessionInfo:
        """A session's step, times and model version."""
        services = holder.services
        record = await services.store.get(store_key(request.scope, session_id))
        if record is None:
            raise SessionNotFound(session_id)
        return _info(services, session_id, record)

    @router.delete("/sessions/{session_id}")
    async def delete_session(session_id: SessionIdPath, request: Request) -> DeleteResponse:
        """Forget a session entirely; ``deleted`` is false when there was none (safe to retry)."""
        deleted = await holder.services.store.delete(store_key(request.scope, session_id))
        return DeleteResponse(session_id=session_id, deleted=deleted)

    return router
