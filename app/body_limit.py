"""Refuse oversized request bodies with 413 before they are read into memory.

FastAPI's own ``max_body_size`` (Starlette's RequestBodyLimitMiddleware) answers a too-large
Content-Length with a plain-text 413 that replaces any response, which would break the service's
one error shape; this small middleware answers in that shape.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import service_error_response
from app.errors import BodyTooLarge


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
                    await service_error_response(BodyTooLarge(limit))(scope, receive, send)
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
                    # Raised inside FastAPI's body parsing, which turns any other exception into
                    # a 400 but lets HTTPException through; its handler gives the usual body.
                    raise HTTPException(413, BodyTooLarge(limit).message)
            return message

        await self.app(scope, counting_receive, send)
