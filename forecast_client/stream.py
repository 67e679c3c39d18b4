"""``ForecastStream``: the ``/stream`` WebSocket from Python, with the client's step protocol.

Every message carries its session's step. Messages may be sent ahead of their answers (several
of one session get consecutive steps); answers come back in order. When the socket fails (a
dropped connection, a server restarting, no answer within the timeout), the stream opens a new
one and sends every unanswered message again with its same step: a message that was applied
but whose answer was lost is answered again, ``"replayed": true``, not applied twice. (The
service replays a session's last request only: when a socket fails with several messages of one
session unanswered, those applied before its last come back as a ``StepConflict`` whose
``expected_step`` is past their step: applied once, their answers lost.)
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from forecast_client.answers import Prediction
from forecast_client.errors import (
    ServiceRefused,
    ServiceUnreachable,
    StepConflict,
    item_refusal,
    refusal,
)
from forecast_client.operations import StepBook

# What a stream asks of its client: a session's step when it does not know it yet.
ReadStep = Callable[[str], Awaitable[int]]
# The client's retry rule: seconds to wait before attempt number n (2, 3, ...).
PauseBefore = Callable[[int], float]


def stream_url(base_url: str) -> str:
    """The WebSocket URL of ``/stream`` on the service at ``base_url`` (http or https)."""
    scheme, rest = base_url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest.rstrip('/')}/stream"


class ForecastStream:
    """One ``/stream`` socket (opened again as needed). Use it as an async context manager,
    from ``AsyncForecastClient.stream()``."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        steps: StepBook,
        read_step: ReadStep,
        *,
        attempts: int,
        pause_before: PauseBefore,
        timeout_s: float,
        model: str | None = None,
    ) -> None:
        self._url = url
        self._headers = headers
        self._steps = steps
        self._read_step = read_step
        self._attempts = attempts
        self._pause_before = pause_before
        self._timeout_s = timeout_s
        self._model = model
        self._socket: ClientConnection | None = None
        # Each session's step for its next message, counting messages sent and not answered.
        self._next: dict[str, int] = {}
        # Sent and not answered yet, oldest first: the session and the message's text.
        self._unanswered: deque[tuple[str, str]] = deque()

    async def send(
        self, session_id: str, value: float, *, levels: Sequence[float] | None = None
    ) -> None:
        """Send one value for a session (created on first use); its answer comes from
        ``receive``, after those of the messages sent before it."""
        step = self._next.get(session_id)
        if step is None:
            step = self._steps.get(session_id)
        if step is None:
            step = await self._read_step(session_id)
        message: dict[str, Any] = {"session_id": session_id, "value": value, "step": step}
        if levels is not None:
            message["levels"] = list(levels)
        if self._model is not None:
            message["model"] = self._model
        text = json.dumps(message)
        self._next[session_id] = step + 1
        self._unanswered.append((session_id, text))
        try:
            if self._socket is None:
                await self._connected()  # a new socket gets every unanswered message, this last
            else:
                await self._socket.send(text)
        except (OSError, WebSocketException):
            await self._drop()  # sent again, with the others unanswered, when next needed

    async def receive(self) -> Prediction | ServiceRefused:
        """The answer to the oldest unanswered message: /predict's, or, when that message was
        refused, the error (not raised: the stream goes on)."""
        if not self._unanswered:
            raise RuntimeError("receive() without a message sent and not answered")
        raw = await self._next_answer()
        session_id, _ = self._unanswered.popleft()
        answer: dict[str, Any] = json.loads(raw)
        if "error" in answer:
            error = item_refusal(answer)
            if isinstance(error, StepConflict):  # fed or reset by another: what we knew is stale
                self._steps.forget(session_id)
                self._next.pop(session_id, None)
            return error
        self._steps.set(session_id, answer["step"])
        if not any(sent == session_id for sent, _ in self._unanswered):
            self._next.pop(session_id, None)  # the book holds its step again
        return answer  # type: ignore[return-value]

    async def predict(
        self, session_id: str, value: float, *, levels: Sequence[float] | None = None
    ) -> Prediction:
        """Send one value and wait for its answer; a refusal is raised, as by the client's
        ``predict``. Only with no other message waiting for its answer."""
        if self._unanswered:
            raise RuntimeError("predict() with answers still to receive: receive() them first")
        await self.send(session_id, value, levels=levels)
        answer = await self.receive()
        if isinstance(answer, ServiceRefused):
            raise answer
        return answer

    async def aclose(self) -> None:
        """Close the socket (answers not received are lost; their values may be applied)."""
        await self._drop()

    async def __aenter__(self) -> Self:
        await self._connected()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _next_answer(self) -> str | bytes:
        """The next answer, through as many new sockets as the attempts allow; each new one
        first gets every unanswered message again, in order."""
        failures = 0
        while True:
            try:
                socket = await self._connected()
                with anyio.fail_after(self._timeout_s):
                    return await socket.recv()
            except (OSError, TimeoutError, WebSocketException) as error:
                await self._drop()
                failures += 1
                if failures >= self._attempts:
                    raise ServiceUnreachable.after(self._url, self._attempts, error) from error
                await anyio.sleep(self._pause_before(failures + 1))

    async def _connected(self) -> ClientConnection:
        if self._socket is not None:
            return self._socket
        try:
            socket = await connect(
                self._url, additional_headers=self._headers, open_timeout=self._timeout_s
            )
        except InvalidStatus as refused:  # the handshake answered with an error (a bad key)
            body: Any = refused.response.body or b""
            try:
                body = json.loads(body)
            except ValueError:
                body = body.decode(errors="replace")
            raise refusal(refused.response.status_code, body) from None
        self._socket = socket
        for _, text in self._unanswered:  # a new socket: what the old one left unanswered
            await socket.send(text)
        return socket

    async def _drop(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close()
