"""Helpers shared by the service tests: apps on the ASGI transport, real uvicorn processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def asgi_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind httpx's ASGI transport."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """A uvicorn process under test."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_uvicorn(env: dict[str, str], log: Path, port: int | None = None) -> Server:
    """Start ``uvicorn app.main:app`` on a free port (not waiting for it)."""
    port = port or free_port()
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=REPO,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", process, log)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextlib.contextmanager
def uvicorn_server(env: dict[str, str], log: Path, port: int | None = None) -> Iterator[Server]:
    """A real uvicorn serving the app, ready when /ready answers 200; stopped afterwards."""
    server = start_uvicorn(env, log, port)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(server)


def wait_until_ready(server: Server, timeout: float = 120) -> None:
    base_url, process = server.base_url, server.process
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"uvicorn exited with {process.returncode}: {server.log_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{base_url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} not ready after {timeout} s")
