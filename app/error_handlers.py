"""Every error leaves the service in one shape: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.audit import Audit
from app.errors import ServiceError
from app.json_body_route import UNREADABLE_BODY
from app.responses import JsonLineResponse
from app.schemas import SESSION_ID, ErrorAnswer

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE_HINT = "send it with the header 'Content-Type: application/json'"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> ErrorAnswer:
    """The one error shape."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def service_error_body(error: ServiceError) -> ErrorAnswer:
    """A domain error in the one shape (an item's or a stream message's answer)."""
    return error_body(error.code, error.message, error.details)


def validation_error_body(errors: Sequence[Any]) -> ErrorAnswer:
    """Validation errors (pydantic's) as one 422 ``invalid_request`` body naming each field."""
    problems = [_describe_validation_error(error) for error in errors]
    fields = [{"field": _field(e), "problem": e.get("msg", "")} for e in errors]
    return error_body("invalid_request", "; ".join(problems), {"errors": fields})


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonLineResponse:
    """The one error shape, as a response."""
    return JsonLineResponse(error_body(code, message, details), status_code=status, headers=headers)


def service_error_response(error: ServiceError) -> JsonLineResponse:
    """A domain error as its response (also for middleware that answers before the app)."""
    return error_response(
        error.status_code, error.code, error.message, error.details, headers=error.headers
    )


def _field(error: dict[str, Any]) -> str:
    """Where the error is, as the details name it: the body itself for JSON that does not parse
    (whose location is the body and a character position, not a field)."""
    if error.get("type") == "json_invalid":
        return "body"
    return ".".join(str(part) for part in error.get("loc", ()))


def _describe_validation_error(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    where = ".".join(location) or "body"
    kind = error.get("type", "")
    if kind == "json_invalid":
        problem = error.get("ctx", {}).get("error", "parse error")
        at = [part for part in error.get("loc", ()) if isinstance(part, int)]
        position = f" at character {at[0] + 1}" if at else ""  # counted from 1, as columns are
        return f"the body is not valid JSON{position} ({problem})"
    if kind == "missing":
        return f"{where}: field required"
    if kind == "extra_forbidden":
        return f"{where}: unknown field; remove it"
    if kind == "model_attributes_type":
        # FastAPI leaves a body it did not parse as JSON as raw bytes: the content type was not
        # JSON (curl's -d sends application/x-www-form-urlencoded; some clients send none).
        if isinstance(error.get("input"), bytes | str):
            return f"the body was not read as JSON: {JSON_CONTENT_TYPE_HINT}"
        return "the body must be a JSON object"
    if kind == "model_type" and where == "body":  # the same, from pydantic-core's JSON parser
        return "the body must be a JSON object"
    context = error.get("ctx", {})
    if kind == "string_pattern_mismatch":
        return f"{where}: must be {SESSION_ID.description}"
    if kind == "too_long" and "max_length" in context:
        return (
            f"{where} has {context.get('actual_length')} items; "
            f"send at most {context['max_length']} per request"
        )
    if kind == "less_than_equal":
        return f"{where}: {error.get('input')} is above the limit of {context.get('le')}"
    return f"{where}: {error.get('msg', 'invalid')}"


def _service_error(audit: Audit) -> Callable[[Request, Exception], Awaitable[JsonLineResponse]]:
    async def handle(request: Request, exc: Exception) -> JsonLineResponse:
        assert isinstance(exc, ServiceError)
        audit.refused(exc, request.url.path)
        return service_error_response(exc)

    return handle


async def _validation_error(_request: Request, exc: Exception) -> JsonLineResponse:
    assert isinstance(exc, RequestValidationError)
    return JsonLineResponse(validation_error_body(list(exc.errors())), status_code=422)


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names only the first route's methods; a path served by several routes
    # (GET and DELETE /sessions/{id}) must list them all.
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "__none__"})
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JsonLineResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 400 and message == UNREADABLE_BODY:
        message = "the body could not be read as JSON: send a UTF-8 JSON object"
    elif exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
    elif exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
        message = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    return error_response(exc.status_code, code, message, headers=headers or None)


async def _unexpected_error(request: Request, exc: Exception) -> JsonLineResponse:
    # Logged with its traceback here; the client gets no internals.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; it has been logged")


def install_error_handlers(app: FastAPI, audit: Audit) -> None:
    """Map domain, validation and HTTP errors to the one error shape; ``audit`` counts and logs
    the refusals among them."""
    app.add_exception_handler(ServiceError, _service_error(audit))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
