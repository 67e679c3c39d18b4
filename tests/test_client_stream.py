"""The Python client's /stream against a real server: steps kept, answers in order, and a socket
that fails opened again with its unanswered messages, applied once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from forecast_client.client import AsyncForecastClient, ForecastClient
from forecast_client.errors import InvalidRequest, StepConflict, Unauthorized
from tests.helpers import Server
from tests.test_client import KEY, server  # noqa: F401  (the module's server, shared)

pytestmark = pytest.mark.anyio


def _client(base_url: str, key: str = KEY) -> AsyncForecastClient:
    return AsyncForecastClient(base_url, api_key=key, backoff_s=0)


async def test_a_stream_answers_in_order_and_keeps_the_steps(server: Server) -> None:  # noqa: F811
    values = [0.0, 0.1, 0.2, 0.3]
    async with _client(server.base_url) as client, client.stream() as stream:
        for value in values:  # sent ahead of their answers
            await stream.send("stream-a", value)
        await stream.send("stream-b", 0.5)
        answers = [await stream.receive() for _ in range(len(values) + 1)]
        info = await client.session("stream-a")
    assert [(a["session_id"], a["step"]) for a in answers] == [  # type: ignore[index]
        *(("stream-a", step) for step in range(1, 5)),
        ("stream-b", 1),
    ]
    assert info["step"] == 4
    with ForecastClient(server.base_url, api_key=KEY) as reference:
        expected = [reference.predict("stream-ref", v)["prediction"] for v in values]
    assert [a["prediction"] for a in answers[:4]] == expected  # type: ignore[index]


async def test_a_stream_continues_a_session_fed_before(server: Server) -> None:  # noqa: F811
    with ForecastClient(server.base_url, api_key=KEY) as other:
        other.predict_batch("stream-known", [0.0, 0.1])
    async with _client(server.base_url) as client, client.stream() as stream:
        assert (await stream.predict("stream-known", 0.2))["step"] == 3


async def test_a_refused_message_is_its_answer_and_the_stream_goes_on(
    server: Server,  # noqa: F811
) -> None:
    async with _client(server.base_url) as client, client.stream() as stream:
        await stream.predict("stream-stale", 0.0)
        with ForecastClient(server.base_url, api_key=KEY) as other:
            other.predict("stream-stale", 0.1)
        await stream.send("stream-stale", 0.2)
        refused = await stream.receive()
        after = await stream.predict("stream-stale", 0.2)  # the stale step was forgotten
    assert isinstance(refused, StepConflict) and refused.expected_step == 2
    assert after["step"] == 3


async def test_a_wrong_key_is_refused_at_the_handshake(server: Server) -> None:  # noqa: F811
    async with _client(server.base_url, key="not-a-key") as client:
        with pytest.raises(Unauthorized):
            async with client.stream():
                pass


class DropFirstStreamAnswer:
    """A TCP proxy to the server that, on the first WebSocket connection only, forwards the
    handshake and the client's messages and then cuts the connection instead of forwarding the
    server's first answer (applied by the server, lost on the way)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.sockets_cut = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            listener.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        request = await reader.read(65536)
        cut = b"upgrade: websocket" in request.lower() and self.sockets_cut == 0
        if cut:
            self.sockets_cut += 1
        up_writer.write(request)
        upward = asyncio.create_task(_pipe(reader, up_writer))
        try:
            if cut:
                handshake = await up_reader.readuntil(b"\r\n\r\n")
                writer.write(handshake)
                await up_reader.read(1)  # the server's first answer starts: lose it
                writer.transport.abort()
                up_writer.transport.abort()
            else:
                await _pipe(up_reader, writer)
        finally:
            upward.cancel()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_a_lost_answer_is_sent_again_on_a_new_socket_and_applied_once(
    server: Server,  # noqa: F811
) -> None:
    proxy = DropFirstStreamAnswer(server.base_url)
    async with proxy.running() as base_url, _client(base_url) as client:
        async with client.stream() as stream:
            first = await stream.predict("stream-lost", 0.0)
            second = await stream.predict("stream-lost", 0.1)
        info = await client.session("stream-lost")
    assert proxy.sockets_cut == 1
    assert (first["step"], first["replayed"]) == (1, True)
    assert (second["step"], second["replayed"]) == (2, False)
    assert info["step"] == 2


async def test_an_unreadable_message_is_an_error_answer(server: Server) -> None:  # noqa: F811
    async with _client(server.base_url) as client, client.stream() as stream:
        await stream.send("stream-bad", float("inf"))
        refused = await stream.receive()
        fine = await stream.predict("stream-bad-next", 0.0)
    assert isinstance(refused, InvalidRequest) and refused.code == "invalid_request"
    assert fine["step"] == 1
