"""The service's errors as exceptions, each carrying the server's code, message and details.

ForecastError                  anything the client could not get an answer for
├── ServiceUnreachable         no answer after every retry (connection refused, timeouts)
└── ServiceRefused             the service answered with an error body
    ├── InvalidRequest         400, 413, 422: the request itself is wrong
    ├── Unauthorized           401: missing or unknown API key
    ├── SessionNotFound        404 session_not_found
    ├── SessionConflict        409
    │   └── StepConflict       409 step_conflict: ``expected_step`` is the session's count
    └── ServiceUnavailable     503: store down, session busy, model not ready, session cap
"""

from __future__ import annotations

from typing import Any


class ForecastError(Exception):
    """Base of every error the client raises."""


class ServiceUnreachable(ForecastError):
    """No answer from the service after every attempt; the last transport error is the cause."""

    def __init__(self, url: str, attempts: int, reason: str) -> None:
        super().__init__(f"no answer from {url} after {attempts} attempt(s): {reason}")
        self.url = url
        self.attempts = attempts

    @classmethod
    def after(cls, url: str, attempts: int, error: Exception) -> ServiceUnreachable:
        """``url`` gave no answer in ``attempts`` attempts, the last one failing with ``error``."""
        return cls(url, attempts, f"{type(error).__name__}: {error}")


class ServiceRefused(ForecastError):
    """The service answered with its error shape: ``status``, ``code``, ``message``, ``details``."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class InvalidRequest(ServiceRefused):
    """The request was refused as it is (bad field, body too large, not JSON)."""


class Unauthorized(ServiceRefused):
    """Missing, malformed or unknown API key."""


class SessionNotFound(ServiceRefused):
    """No such session (never fed, deleted, or expired)."""


class SessionConflict(ServiceRefused):
    """The session is not in a state for this request (no values yet, another model's state)."""


class StepConflict(SessionConflict):
    """The step sent is not the session's: another writer fed it, or it was reset."""

    @property
    def expected_step(self) -> int:
        """The number of values the session has consumed, as the service says."""
        return int(self.details["expected_step"])


class TooManyRequests(ServiceRefused):
    """The API key is over its session quota (``session_quota_reached``: delete sessions) or
    its request rate (``rate_limited``: wait ``retry_after_s`` seconds)."""

    @property
    def retry_after_s(self) -> int | None:
        """Seconds to wait before retrying, for a rate refusal; None for a quota."""
        value = self.details.get("retry_after_s")
        return int(value) if value is not None else None


class ServiceUnavailable(ServiceRefused):
    """The service cannot serve now (store down, session busy, model not ready); worth a retry."""


def refusal(status: int, body: Any) -> ServiceRefused:
    """The exception for an error answer (a body not in the error shape still gives one)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ServiceRefused(status, "http_error", f"unexpected answer: {body!r}"[:300], {})
    code = str(error.get("code", "http_error"))
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    kind: type[ServiceRefused] = ServiceRefused
    if code == "step_conflict":
        kind = StepConflict
    elif status == 409:
        kind = SessionConflict
    elif status in (400, 413, 415, 422):
        kind = InvalidRequest
    elif status in (401, 403):
        kind = Unauthorized
    elif status == 404 and code == "session_not_found":
        kind = SessionNotFound
    elif status == 429:
        kind = TooManyRequests
    elif status == 503:
        kind = ServiceUnavailable
    return kind(status, code, str(error.get("message", "")), details or {})


# /predict/many answers an item's refusal without an HTTP status of its own: the status its
# code has when it answers a whole request.
_STATUS_OF_CODE = {
    "invalid_request": 422,
    "body_too_large": 413,
    "step_conflict": 409,
    "no_values_yet": 409,
    "session_under_other_model": 409,
    "session_not_found": 404,
    "model_not_found": 404,
    "session_quota_reached": 429,
    "rate_limited": 429,
    "session_limit_reached": 503,
    "session_busy": 503,
    "store_unavailable": 503,
    "model_not_ready": 503,
}


def item_refusal(result: dict[str, Any]) -> ServiceRefused:
    """The exception for one item's error in a /predict/many answer."""
    error = result.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return refusal(_STATUS_OF_CODE.get(str(code), 400), result)
