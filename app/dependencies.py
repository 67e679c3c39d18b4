"""The one dependency through which routes get what the lifespan built.

Every FastAPI dependency costs microseconds to resolve per request (comparable to the LSTM step),
and a plain ``def`` one also a threadpool hop; so routes take a single ``async`` dependency,
:func:`get_caller`: the caller's session namespace and the services, built once by the lifespan.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Request

from app.auth import session_key
from app.errors import ModelNotReady
from app.forecaster import Forecaster
from app.state import Services


class Caller(NamedTuple):
    """An authenticated request's view of the service."""

    tenant: str
    services: Services

    def session_key(self, session_id: str) -> str:
        return session_key(self.tenant, session_id)

    @property
    def forecaster(self) -> Forecaster:
        """The served model; 503 while none is loaded."""
        slot = self.services.model
        if slot.forecaster is None:
            raise ModelNotReady(f"no model is being served: {slot.problem}")
        return slot.forecaster


async def get_caller(request: Request) -> Caller:
    """Authenticate (401 when keys are configured and no valid one is sent); hand out services."""
    # The lifespan's state dict itself: request.state would wrap it in a new object per request.
    services: Services = request.scope["state"]["services"]
    api_keys = services.api_keys
    authorization = request.headers.get("authorization") if api_keys.enabled else None
    return Caller(api_keys.tenant_for(authorization), services)


CallerDep = Annotated[Caller, Depends(get_caller)]
