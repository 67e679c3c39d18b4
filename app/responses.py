"""A response for the hot routes: a typed dict the route built, serialized by pydantic's Rust
serializer, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core
from starlette.responses import Response


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
        return pydantic_core.to_json(content)
