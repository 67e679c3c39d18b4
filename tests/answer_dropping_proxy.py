"""A TCP proxy in front of a Redis server that can lose an answer: the command reaches Redis and
runs, its answer never reaches the client, whose connection then drops (as when the network
fails between the two). redis-py then sends the command again on a new connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType

Meanwhile = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class AnswerDroppingProxy:
    """Listens on a free loopback port and forwards every connection to ``port``."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._server: asyncio.Server | None = None
        self._armed: Meanwhile | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.dropped = 0  # answers lost so far

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def drop_next_script_answer(self, meanwhile: Meanwhile = _nothing) -> None:
        """Lose the answer of the next command that runs a script (EVALSHA), after awaiting
        ``meanwhile`` (what happens to Redis between the script's run and its resend)."""
        self._armed = meanwhile

    async def __aenter__(self) -> AnswerDroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        # Ended by the proxy's exit: a handler asyncio finds cancelled is logged as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(client, to_client)
        self._connections.discard(connection)

    async def _forward(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        upstream, to_upstream = await asyncio.open_connection("127.0.0.1", self._upstream)
        dropping: list[Meanwhile] = []  # set when this connection's next answer is to be lost

        async def requests() -> None:
            while data := await client.read(65536):
                if self._armed is not None and b"EVALSHA" in data.upper():
                    dropping.append(self._armed)
                    self._armed = None
                to_upstream.write(data)
                await to_upstream.drain()

        async def answers() -> None:
            while data := await upstream.read(65536):
                if dropping:
                    await dropping[0]()
                    self.dropped += 1
                    return
                to_client.write(data)
                await to_client.drain()

        forwarding = asyncio.ensure_future(requests())
        try:
            await answers()
        finally:
            forwarding.cancel()
            for writer in (to_client, to_upstream):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
