"""``/stream``: a WebSocket carrying /predict's messages, one answer per message, in order.

Each message is applied, answered and sent before the next is read (receive, apply, send): a
client that sends faster than it reads fills its own TCP window, not the server's memory, as
the server stops reading while its answer waits to be sent (uvicorn's sans-I/O implementation
pauses reading a socket until the app has taken what it read; messages of at most
``--ws-max-size``). Messages of different sockets are applied together
(app.routes.stream_batch).
An error answers its message and the socket stays open; only a handshake without a valid key
(refused by :class:`app.auth.AuthMiddleware`) or a server shutting down closes it.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.audit import Audit
from app.auth import caller_namespace, session_key
from app.error_handlers import service_error_body, validation_error_body
from app.errors import BodyTooLarge, ServiceError
from app.rate_limit import BUCKET_SCOPE_KEY, TokenBucket
from app.responses import json_bytes
from app.routes.stream_batch import StreamBatcher
from app.schemas import ErrorAnswer, PredictRequest, PredictResponse
from app.services import ServicesHolder

STREAM_PATH = "/stream"
# The subprotocol the server selects when a client offers it; a browser must offer one (next
# to its key: app.auth), since it fails a handshake that selects none of several offered.
SUBPROTOCOL = "forecast.v1"
# Close code for a socket opened while the service is starting or stopping.
TRY_AGAIN_LATER = 1013


async def answer_message(
    holder: ServicesHolder,
    batcher: StreamBatcher,
    namespace: str,
    bucket: TokenBucket | None,
    raw: str | bytes,
    audit: Audit,
) -> PredictResponse | ErrorAnswer:
    """One message's answer: /predict's, or the error in the one shape. Each message is charged
    to the key's rate limit as a /predict request is (``bucket``: the key's, None: no limit);
    over the rate, the answer is the 429 ``rate_limited`` error and the socket stays open. A
    valid message is applied in the next batch of ``batcher``, with other sockets' messages."""
    try:
        if bucket is not None:
            bucket.take()
        services = holder.services
        if len(raw) > services.settings.max_body_bytes:
            raise BodyTooLarge(services.settings.max_body_bytes)
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError as invalid:
            return validation_error_body(invalid.errors(include_url=False))
    except ServiceError as error:
        audit.refused(error, STREAM_PATH)  # counted and logged as a refused request would be
        return service_error_body(error)
    return await batcher.answer(session_key(namespace, body.session_id, body.model), body)


def stream_route(holder: ServicesHolder, batcher: StreamBatcher, audit: Audit) -> WebSocketRoute:
    """The WebSocket route, bound to the app's services and the batcher of its messages."""

    async def stream(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols", ())
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        namespace = caller_namespace(websocket.scope)
        # The key's rate bucket (AuthMiddleware charged the handshake to it as one request).
        bucket: TokenBucket | None = websocket.scope.get(BUCKET_SCOPE_KEY)
        try:
            metrics = holder.services.metrics
        except ServiceError:  # starting or stopping: the socket's own error
            await websocket.close(code=TRY_AGAIN_LATER)
            return
        metrics.stream_sockets.inc()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                answer = await answer_message(
                    holder,
                    batcher,
                    namespace,
                    bucket,
                    raw if raw is not None else message.get("bytes") or b"",
                    audit,
                )
                metrics.count_stream_message("error" in answer)
                await websocket.send_text(json_bytes(answer).decode())
        except WebSocketDisconnect:
            return  # the client went away while its answer was being sent
        finally:
            metrics.stream_sockets.dec()

    return WebSocketRoute(STREAM_PATH, stream, name="stream")
