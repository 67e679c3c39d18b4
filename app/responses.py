"""A response for the hot routes: the route's pydantic model, serialized once, by pydantic."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import Response


class ModelResponse(Response):
    """JSON bytes straight from a response model's Rust serializer.

    Returned as a Response, the model skips FastAPI's second validation of it against the
    route's ``response_model`` and its serialization wrapper, which cost about as much as the
    LSTM step; the route still declares ``response_model``, so the schema documents the body.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if not isinstance(content, BaseModel):
            raise TypeError(f"ModelResponse takes a pydantic model, not {type(content).__name__}")
        return content.__pydantic_serializer__.to_json(content)
