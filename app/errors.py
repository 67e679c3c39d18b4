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

    @classmethod
    def at(cls, max_sessions: int) -> SessionLimitReached:
        """The one wording of a full store, whichever store it is."""
        return cls(
            f"the service holds its maximum of {max_sessions} sessions; "
            "delete or let idle sessions expire, or retry later",
            max_sessions=max_sessions,
        )


class SessionBusy(ServiceError):
    status_code = 503
    code = "session_busy"

    @classmethod
    def after(cls, attempts: int) -> SessionBusy:
        """The one wording of a compare-and-set that kept losing, whichever store it is."""
        return cls(
            f"the session changed under {attempts} attempts in a row; retry the request",
            attempts=attempts,
        )


class TooManyValues(ServiceError):
    status_code = 422
    code = "too_many_values"


class NothingToForecastFrom(ServiceError):
    status_code = 409
    code = "no_values_yet"


class StoreUnavailable(ServiceError):
    status_code = 503
    code = "store_unavailable"


class ModelNotReady(ServiceError):
    status_code = 503
    code = "model_not_ready"


class ModelCheckFailed(Exception):
    """The fast step disagrees with the batch-1 Keras copy; the service must not become ready."""
