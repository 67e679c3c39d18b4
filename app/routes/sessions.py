"""Session life cycle: reset, inspect, delete."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request

from app.dependencies import caller_of
from app.errors import SessionNotFound
from app.schemas import (
    SESSION_ID_PATTERN,
    DeleteResponse,
    ErrorResponse,
    ResetResponse,
    SessionInfo,
    SessionRequest,
)
from app.sessions import SessionRecord, reset

router = APIRouter(
    tags=["sessions"],
    responses={status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 503)},
)

SessionIdPath = Annotated[
    str, Path(pattern=SESSION_ID_PATTERN, description="1-128 characters of A-Z a-z 0-9 . _ : -")
]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


@router.post("/reset")
async def reset_session(body: SessionRequest, request: Request) -> ResetResponse:
    """Clear a session's state and count; an unknown session is fine."""
    caller = caller_of(request)
    forecaster = caller.forecaster

    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, None]:
        # Unknown: nothing to clear, and no record to count against the session cap.
        return (reset(record, forecaster, time.time()) if record is not None else None), None

    await caller.services.store.apply(caller.session_key(body.session_id), compute)
    return ResetResponse(session_id=body.session_id, step=0)


@router.get("/sessions/{session_id}")
async def session_info(session_id: SessionIdPath, request: Request) -> SessionInfo:
    """A session's step, times and model version."""
    caller = caller_of(request)
    record = await caller.services.store.get(caller.session_key(session_id))
    if record is None:
        raise SessionNotFound(f"no session {session_id!r} (never fed, deleted, or expired)")
    return SessionInfo(
        session_id=session_id,
        step=record.step,
        created_at=_iso(record.created_at),
        last_used_at=_iso(record.last_used_at),
        expires_at=_iso(record.last_used_at + caller.services.settings.session_ttl_s),
        model_version=record.model_version,
        last_prediction=record.last_predictions[-1] if record.last_predictions else None,
    )


@router.delete("/sessions/{session_id}")
async def delete_session(session_id: SessionIdPath, request: Request) -> DeleteResponse:
    """Forget a session entirely; ``deleted`` is false when there was none (safe to retry)."""
    caller = caller_of(request)
    deleted = await caller.services.store.delete(caller.session_key(session_id))
    return DeleteResponse(session_id=session_id, deleted=deleted)
