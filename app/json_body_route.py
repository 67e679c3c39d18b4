"""A route class whose JSON body is parsed and validated in one pass by pydantic-core.

FastAPI's request handler decodes the body with ``json.loads``, then solves the route's
dependencies and validates the body field by field; for a microsecond model step that handling
costs more than everything else the service does per request (README, "Benchmarks"). A route
built by :class:`JsonBodyRoute` whose endpoint takes exactly one body model and the request, and
returns a finished response, instead validates the raw bytes with the model's
``model_validate_json`` and calls the endpoint directly.

Only bodies that pass take that path: a body that is not declared JSON, not valid JSON or not
valid for the model goes through FastAPI's own handler, so every refusal keeps FastAPI's checks
and the service's error messages exactly. Routes of any other shape are FastAPI's as usual, and
the OpenAPI schema is the same either way.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# FastAPI's answer to a body that cannot be read at all (app.error_handlers words it for clients).
UNREADABLE_BODY = "There was an error parsing the body"


def is_json_media_type(content_type: bytes) -> bool:
    """``application/json`` or ``application/...+json``, parameters ignored (FastAPI's rule)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _content_type(request: Request) -> bytes | None:
    # Read from the raw headers: building Starlette's Headers object costs more than this loop.
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            return bytes(value)
    return None


class JsonBodyRoute(APIRoute):
    """An API route that takes the one-pass path when its shape allows (see the module)."""

    # Whether this route's valid bodies take the one-pass path; set when its handler is built.
    one_pass = False

    def get_route_handler(self) -> Handler:
        fastapi_handler = super().get_route_handler()
        direct = self._direct_call()
        self.one_pass = direct is not None
        if direct is None:
            return fastapi_handler
        model, call = direct
        validate = model.model_validate_json

        async def handler(request: Request) -> Response:
            content_type = _content_type(request)
            if content_type is None or not is_json_media_type(content_type):
                return await fastapi_handler(request)
            try:
                raw = await request.body()
            except HTTPException:  # a body that outgrew the size limit while streaming
                raise
            except Exception as error:  # as FastAPI: a broken body is the client's 400
                raise HTTPException(400, UNREADABLE_BODY) from error
            try:
                body = validate(raw)
            except ValidationError:
                # FastAPI re-reads the body the request object already holds.
                return await fastapi_handler(request)
            return await call(body, request)

        return handler

    def _direct_call(
        self,
    ) -> tuple[type[BaseModel], Callable[[BaseModel, Request], Awaitable[Response]]] | None:
        """The body model and a direct call of the endpoint, if this route has the shape."""
        dependant = self.dependant
        if (
            len(dependant.body_params) != 1
            or self._embed_body_fields
            or dependant.dependencies
            or dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.request_param_name is None
            or not inspect.iscoroutinefunction(self.endpoint)
        ):
            return None
        model = dependant.body_params[0].field_info.annotation
        # Resolved as FastAPI resolves it (the endpoint's module may postpone annotations).
        returns = get_typed_return_annotation(self.endpoint)
        if not (
            isinstance(model, type)
            and issubclass(model, BaseModel)
            and isinstance(returns, type)
            and issubclass(returns, Response)
        ):
            return None
        endpoint = self.endpoint
        body_name = dependant.body_params[0].name
        request_name = dependant.request_param_name

        async def call(body: BaseModel, request: Request) -> Response:
            response: Response = await endpoint(**{body_name: body, request_name: request})
            return response

        return model, call
