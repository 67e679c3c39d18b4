"""Domain errors raised by the core, mapped to HTTP statuses in one place (see app.handlers)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error with an HTTP status, a stable code and a message that says what to do."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class StepConflict(ServiceError):
    status_code = 409
    code = "step_conflict"


class SessionNotFound(ServiceError):
    status_code = 404
    code = "session_not_found"


class SessionLimitReached(ServiceError):
    status_code = 503
    code = "session_limit_reached"


class SessionBusy(ServiceError):
    status_code = 503
    code = "session_busy"


class StoreUnavailable(ServiceError):
    status_code = 503
    code = "store_unavailable"


class ModelNotReady(ServiceError):
    status_code = 503
    code = "model_not_ready"


class ModelCheckFailed(Exception):
    """The fast step disagrees with the batch-1 Keras copy; the service must not become ready."""
