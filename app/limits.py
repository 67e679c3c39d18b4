"""Refuse oversized request bodies with 413 before they are read into memory.

FastAPI's own ``max_body_size`` (Starlette's RequestBodyLimitMiddleware) answers a too-large
Content-Length with a plain-text 413 that replaces any response, which would break the service's
one error shape; this small middleware answers in that shape.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.handlers import error_response


def _too_large_message(limit: int) -> str:
    return f"request body exceeds {limit} bytes; send fewer values per request"


class BodySizeLimitMiddleware:
    """413 for a Content-Length over the limit, or a streamed body that grows past it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await self._refuse(scope, receive, send)
                    return
                # The HTTP parser delivers no more than Content-Length bytes: nothing to count.
                await self.app(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app's body parsing; the app's HTTPException handler
                    # turns it into the usual error body.
                    raise HTTPException(413, _too_large_message(limit))
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "body_too_large",
            _too_large_message(self.max_body_bytes),
            {"max_body_bytes": self.max_body_bytes},
            headers={"connection": "close"},
        )
        await response(scope, receive, send)
