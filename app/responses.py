"""The service's JSON responses: every answer ends with a newline, so that answers printed one
after another (``curl a; curl b``) stay one per line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core
from starlette.responses import JSONResponse, Response

# Ends every JSON answer of the service.
LINE_END = b"\n"


class JsonBytesResponse(Response):
    """JSON bytes of a plain mapping of numbers and strings the route computed itself.

    FastAPI would validate the route's return value against its ``response_model`` and then
    serialize it, which costs more than the LSTM step; the route still declares
    ``response_model`` (a TypedDict that type-checks the mapping), so the schema documents the
    body, and the tests check bodies against it.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if not isinstance(content, Mapping):
            raise TypeError(f"JsonBytesResponse takes a mapping, not {type(content).__name__}")
        return pydantic_core.to_json(content) + LINE_END


class JsonLineResponse(JSONResponse):
    """Every other JSON answer (routes' default, the error shape), serialized the same way."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content) + LINE_END
