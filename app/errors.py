"""Domain errors; each builds its own message from structured arguments.

Every ``ServiceError`` leaves the service as ``{"error": {"code", "message", "details"}}`` with its
status (mapped once, in :mod:`app.error_handlers`), so one condition reads the same wherever it is
raised::

    ServiceError
    ├── Unauthorized              401  no key, a malformed header, or an unknown key
    ├── Forbidden                 403  a client key on an admin route
    ├── SessionNotFound           404  unknown, deleted or expired session
    ├── ModelNotFound             404  no model of that name is served
    ├── StepConflict              409  the client's step does not match the session's count
    ├── NoValuesYet               409  /forecast on a session that has consumed nothing
    ├── SessionUnderOtherModel    409  /forecast on state computed by another model
    ├── BodyTooLarge              413  the request body is over the configured limit
    ├── SessionQuotaReached       429  a new session at the caller's own quota
    ├── RateLimited               429  the caller is over its request rate (Retry-After)
    ├── SessionLimitReached       503  a new session at the service's cap
    ├── SessionBusy               503  the compare-and-set kept losing
    ├── StoreUnavailable          503  the session store does not answer
    └── ModelNotReady             503  no checked model is loaded

    ModelCheckFailed (not a ServiceError): the compiled step disagrees with Keras at load time.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error with an HTTP status, a stable code and a message that says what to do."""

    status_code = 500
    code = "internal_error"
    headers: dict[str, str] | None = None
    # Refusals that /metrics counts and the audit log reports, by this reason (never by key).
    audit_reason: str | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.audit_reason = reason

    @classmethod
    def missing_key(cls) -> Unauthorized:
        return cls("missing API key: send 'Authorization: Bearer <key>'", "missing_key")

    @classmethod
    def malformed_header(cls) -> Unauthorized:
        return cls("malformed Authorization header: expected 'Bearer <key>'", "malformed_header")

    @classmethod
    def unknown_key(cls) -> Unauthorized:
        return cls("unknown API key", "unknown_key")


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"
    audit_reason = "client_key_on_admin_route"

    def __init__(self) -> None:
        super().__init__("this route needs an admin key; the key sent is a client key")


class SessionNotFound(ServiceError):
    status_code = 404
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"no session {session_id!r} (never fed, deleted, or expired); "
            "feed it a value with /predict"
        )


class InvalidCursor(ServiceError):
    status_code = 422
    code = "invalid_cursor"

    def __init__(self, cursor: str) -> None:
        super().__init__(
            f"cursor {cursor!r} is not one this service gave: send the next_cursor of the "
            "previous page, or none for the first page",
            cursor=cursor,
        )


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"

    def __init__(self, name: str, served: list[str]) -> None:
        names = ", ".join(served) or "none"
        super().__init__(
            f"no model {name!r} is served (served: {names}); GET /models lists them",
            model=name,
            served=served,
        )


class PlotNotFound(ServiceError):
    status_code = 404
    code = "plot_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"model {name!r} has no evaluation plot (its artifact was written without one)",
            model=name,
        )


class StepConflict(ServiceError):
    status_code = 409
    code = "step_conflict"

    def __init__(self, sent_step: int, session_step: int) -> None:
        super().__init__(
            f"step {sent_step} does not match this session, which has consumed "
            f"{session_step} value(s); send step={session_step} to append",
            expected_step=session_step,
        )

    @classmethod
    def behind_refused(cls, session_step: int) -> StepConflict:
        """An item of /predict/many behind a refused item of the same session: not applied."""
        conflict = cls.__new__(cls)
        ServiceError.__init__(
            conflict,
            "not applied: an earlier item for this session in the same request was refused; "
            f"the session has consumed {session_step} value(s): resend from step={session_step}",
            expected_step=session_step,
        )
        return conflict


class NoValuesYet(ServiceError):
    status_code = 409
    code = "no_values_yet"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} has consumed no values since its reset; feed one first"
        )


class SessionUnderOtherModel(ServiceError):
    status_code = 409
    code = "session_under_other_model"

    def __init__(self, session_id: str, session_model: str, served_model: str) -> None:
        super().__init__(
            f"session {session_id!r} holds state of model {session_model}, not the served "
            f"{served_model}; feed it a value to restart it under the served model",
            session_model_version=session_model,
            served_model_version=served_model,
        )


class BodyTooLarge(ServiceError):
    status_code = 413
    code = "body_too_large"
    headers = {"Connection": "close"}

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(
            f"request body exceeds {max_body_bytes} bytes; send fewer values per request",
            max_body_bytes=max_body_bytes,
        )


class SessionQuotaReached(ServiceError):
    status_code = 429
    code = "session_quota_reached"
    audit_reason = "session_quota"

    def __init__(self, quota: int) -> None:
        super().__init__(
            f"this API key holds its quota of {quota} live sessions; delete sessions or let "
            "idle ones expire before opening another (existing sessions keep working)",
            max_sessions_per_key=quota,
        )


class RateLimited(ServiceError):
    status_code = 429
    code = "rate_limited"
    audit_reason = "rate_limit"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"this API key is over its request rate; retry after {retry_after_s} s",
            retry_after_s=retry_after_s,
        )
        self.headers = {"Retry-After": str(retry_after_s)}


class SessionLimitReached(ServiceError):
    status_code = 503
    code = "session_limit_reached"
    audit_reason = "session_limit"

    def __init__(self) -> None:
        # Says nothing of the service's capacity or of other callers: tenants share this cap.
        super().__init__(
            "the service cannot open new sessions right now; existing sessions keep working, "
            "retry later"
        )


class SessionBusy(ServiceError):
    status_code = 503
    code = "session_busy"

    def __init__(self, attempts: int) -> None:
        super().__init__(
            f"the session changed under {attempts} attempts in a row; retry the request",
            attempts=attempts,
        )


class StoreUnavailable(ServiceError):
    status_code = 503
    code = "store_unavailable"

    def __init__(self, store: str, reason: str, remedy: str = "retry shortly") -> None:
        super().__init__(f"{store} is unavailable ({reason}); {remedy}")


class ModelNotReady(ServiceError):
    status_code = 503
    code = "model_not_ready"

    def __init__(self, problem: str | None) -> None:
        super().__init__(f"no model is being served: {problem or 'still loading'}")


class ModelCheckFailed(Exception):
    """The compiled step disagrees with the batch-1 Keras copy: the service must not serve it."""

    def __init__(self, version: str, difference: float, tolerance: float) -> None:
        super().__init__(
            f"compiled step disagrees with the batch-1 Keras copy of {version} by "
            f"{difference:.3g} (tolerance {tolerance:g}); refusing to serve"
        )
