"""Processes on 127.0.0.1 that the benchmarks and the tests both start: the one definition of
a free port, of waiting for an answer, and of a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_200(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


class RedisServer:
    """redis-server on a free loopback port, AOF with fsync always in ``folder``; stop() and
    start() at will (the port and the data stay)."""

    def __init__(self, folder: Path, *, durable: bool = True) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError(
                "redis-server is not installed: run './run test', which installs it, "
                "or 'apt-get install redis-server'"
            )
        self.binary = binary
        self.folder = folder
        self.durable = durable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # Extra redis-server arguments (for example compose's); later ones win.
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.folder), "--save", "", "--protected-mode", "no",
            *persistence, *self.extra_args,
        ]  # fmt: skip

    def start(self, prefix: list[str] | None = None) -> None:
        """Start and wait until it answers PING; ``prefix`` runs it under, say, taskset."""
        self.process = subprocess.Popen(
            [*(prefix or []), *self.command()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """SIGTERM: Redis finishes its AOF and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()
