"""Helpers shared by the service tests: apps on the ASGI transport, real uvicorn processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.main import create_app
from app.services import ModelSlot
from app.session_history import as_array
from app.session_rules import FeedOutcome, SessionRecord, feed
from app.settings import Settings
from app.stores.base import Compute, FeedsInPlace, SessionStore
from app.window_ring import RingWindow
from bench.local import free_port, wait_for_200
from forecast_core.arrays import FloatArray
from forecast_core.quiet_tensorflow import QUIET_TENSORFLOW_ENV

REPO = Path(__file__).resolve().parent.parent


def window_rows(record: SessionRecord | None) -> FloatArray:
    """A record's history window as rows (decoded from its ring when a store read it so)."""
    assert record is not None
    rows = as_array(record.history)
    assert rows is not None
    return rows


class Twin:
    """A session as the record path computes it, value by value: what a store should hold."""

    def __init__(
        self, forecaster: Forecaster, policy: IntervalPolicy, *, history: int, now: float
    ) -> None:
        self.forecaster, self.policy = forecaster, policy
        self.history, self.now = history, now
        self.record: SessionRecord | None = None

    def compute(self, value: float) -> Compute[FeedOutcome]:
        """What a store's ``apply`` is given to feed ``value``."""

        def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
            return feed(
                record, self.forecaster, self.policy, [value], None, self.now, history=self.history
            )

        return compute

    def next_record(self, value: float, record: SessionRecord | None) -> SessionRecord:
        """What ``value`` makes of ``record``."""
        new, _ = self.compute(value)(record)
        assert new is not None
        return new

    def feed(self, value: float) -> FeedOutcome:
        """Feed ``value`` to the twin itself."""
        self.record, outcome = self.compute(value)(self.record)
        return outcome

    async def step(self, store: SessionStore, key: str, *values: float) -> None:
        """Feed ``values`` to the session ``key`` through the store's record path, and to the
        twin itself."""
        for value in values:
            await store.apply(key, self.compute(value))
            self.feed(value)

    async def feed_in_place(
        self, store: FeedsInPlace, key: str, value: float, step: int | None = None
    ) -> list[int]:
        """Step the session ``key`` in the store's rows (not the twin): the positions of the
        values applied."""
        stepped = await store.feed_in_place(
            [key], [value], [step], self.forecaster, self.policy, self.history, self.now
        )
        return stepped.indexes


class Clock:
    """A clock the test moves by hand, for expiry without sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_same_record(got: SessionRecord | None, expected: SessionRecord | None) -> None:
    """Field by field, arrays by value (NaN equal to NaN) and type, windows by their ring's
    bytes and shape, tuples by value and element types."""
    assert got is not None and expected is not None
    for name, mine, theirs in zip(SessionRecord._fields, got, expected, strict=True):
        if isinstance(theirs, np.ndarray):
            assert isinstance(mine, np.ndarray), name
            assert mine.dtype == theirs.dtype, name
            assert np.array_equal(mine, theirs, equal_nan=True), name
        elif isinstance(theirs, RingWindow):
            assert isinstance(mine, RingWindow), name
            assert tuple(mine) == tuple(theirs), name  # base and pieces too: none kept
        elif isinstance(theirs, tuple):
            assert mine == theirs and type(mine) is tuple, name
            assert [type(item) for item in mine] == [type(item) for item in theirs], name
        else:
            assert mine == theirs and type(mine) is type(theirs), name


def comparable_record(record: SessionRecord | None) -> SessionRecord:
    """A store's record with its window as rows and its revision 0 (the record path's
    revisions are the store's, not the rules'), to compare with the rules' own."""
    assert record is not None
    window = record.history
    if isinstance(window, RingWindow):
        record = record.with_history(window.array())
    return record.with_revision(0)


async def redis_command_calls(url: str, command: str) -> int:
    """How many times Redis at ``url`` ran ``command`` (scripts' calls too)."""
    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@contextlib.asynccontextmanager
async def asgi_client(
    settings: Settings,
    model: ModelSlot | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind httpx's ASGI transport.

    ``model``: an already-checked model (the ``tutorial_model`` fixture) instead of loading and
    checking ``settings.model_dir`` again.
    """
    app = create_app(settings, model=model, clock=clock)
    async with LifespanManager(app, startup_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@dataclass
class Server:
    """A uvicorn process under test."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def sqlite_server_env(models_dir: Path, folder: Path) -> dict[str, str]:
    """A real server's environment: ``models_dir`` served, sessions in SQLite under ``folder``."""
    return {
        "FORECAST_MODEL_DIR": str(models_dir),
        "FORECAST_STORE": "sqlite",
        "FORECAST_DATA_DIR": str(folder / "data"),
    }


def start_uvicorn(
    env: dict[str, str], log: Path, port: int | None = None, args: Sequence[str] = ()
) -> Server:
    """Start ``uvicorn app.main:app`` on a free port (not waiting for it); ``args`` are more
    uvicorn options."""
    port = port or free_port()
    full_env = {**os.environ, **QUIET_TENSORFLOW_ENV, **env}
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
                *args,
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
def uvicorn_server(
    env: dict[str, str],
    log: Path,
    port: int | None = None,
    args: Sequence[str] = (),
    api_key: str | None = None,
) -> Iterator[Server]:
    """A real uvicorn serving the app, ready when /ready answers 200 (asked with ``api_key``
    when the server has keys); stopped afterwards."""
    server = start_uvicorn(env, log, port, args)
    try:
        wait_until_ready(server, api_key=api_key)
        yield server
    finally:
        stop(server)


def wait_until_ready(server: Server, timeout: float = 120, api_key: str | None = None) -> None:
    """Wait until the server's /ready answers 200; its log in the error if it exits first."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else None
    try:
        wait_for_200(f"{server.base_url}/ready", server.process, timeout, headers)
    except RuntimeError as error:
        raise RuntimeError(f"{error}: {server.log_text()[-3000:]}") from None
