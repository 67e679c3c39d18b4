"""Admin routes: declared once per route, checked after authentication.

``@router.post("/models/reload", dependencies=ADMIN_ONLY)`` makes a route answer 403 to a client
key. In open mode (no keys) every caller may use every route, as before keys existed. The check
is a dependency of the admin routes alone, so the other routes pay nothing for it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from app.auth import caller_key
from app.errors import Forbidden
from app.schemas import ErrorResponse

ADMIN_SCOPE = "admin"


def require_admin(request: Request) -> None:
    """Forbidden (403) unless the caller's key has the admin scope."""
    if not caller_key(request.scope).admin:
        raise Forbidden()


# The one declaration that makes a route admin-only.
ADMIN_ONLY = [Depends(require_admin)]
# What routers holding admin routes add to their documented responses.
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {403: {"model": ErrorResponse}}
