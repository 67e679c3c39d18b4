"""The service's JSON responses: every answer ends with a newline, so that answers printed one
after another (``curl a; curl b``) stay one per line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pydantic_core
from starlette.responses import JSONResponse, Response

# Ends every JSON answer of the service.
LINE_END = b"\n"
# numpy's scalars and arrays as numbers and lists (pydantic's serializer refused all but
# float64): a value a route left as numpy is still answered.
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_bytes(content: Any) -> bytes:
    """``content`` as JSON: the one serializer of every answer, HTTP and WebSocket alike.

    orjson writes the service's answers faster than pydantic's serializer did, and the same
    bytes (README, "Answers written by orjson"); what orjson does not know (a pydantic model)
    goes through pydantic's, and what it refuses (keys that are not strings, an integer over 64
    bits) goes to pydantic's whole. A NaN or an infinity is written ``null`` either way, which
    every JSON parser reads (JSON has no NaN; pydantic's serializer wrote ``NaN``, which strict
    parsers refuse).
    """
    try:
        return orjson.dumps(content, default=pydantic_core.to_jsonable_python, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        return pydantic_core.to_json(content, inf_nan_mode="null")


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
        return json_bytes(content) + LINE_END


class JsonLineResponse(JSONResponse):
    """Every other JSON answer (routes' default, the error shape), serialized the same way."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content) + LINE_END
