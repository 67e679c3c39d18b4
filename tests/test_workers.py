"""uvicorn --workers: the shared stores serve every worker; the memory store refuses to start."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from app.forecaster import Forecaster
from app.serve import uvicorn_command
from app.workers import split_sessions_reason, uvicorn_workers
from bench.local import RedisServer
from tests.helpers import sqlite_server_env, start_uvicorn, stop, uvicorn_server

SERIES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.45, 0.15, 0.9] * 3


@pytest.mark.parametrize(
    ("argv", "environ", "workers"),
    [
        (["uvicorn", "app.main:app"], {}, 1),
        (["uvicorn", "app.main:app", "--workers", "4"], {}, 4),
        (["uvicorn", "app.main:app", "--workers=3"], {}, 3),
        (["uvicorn", "app.main:app"], {"UVICORN_WORKERS": "2"}, 2),
        (["uvicorn", "app.main:app"], {"WEB_CONCURRENCY": "5"}, 5),
        (["uvicorn", "app.main:app", "--workers", "4", "--reload"], {}, 1),
    ],
    ids=["alone", "option", "option-equals", "uvicorn-env", "web-concurrency", "reload"],
)
def test_worker_count_comes_from_uvicorns_own_sources(
    argv: list[str], environ: dict[str, str], workers: int
) -> None:
    assert uvicorn_workers(argv, environ) == workers


def test_a_process_not_spawned_by_uvicorn_is_one_worker() -> None:
    assert uvicorn_workers() == 1


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_only_the_memory_store_cannot_be_split(store: str) -> None:
    assert split_sessions_reason(store, 8) is None
    assert split_sessions_reason("memory", 1) is None


def test_memory_store_with_two_workers_refuses_to_start_in_one_line(
    tutorial_models_dir: Path, tmp_path: Path
) -> None:
    env = {"FORECAST_MODEL_DIR": str(tutorial_models_dir), "FORECAST_STORE": "memory"}
    server = start_uvicorn(env, tmp_path / "server.log", args=["--workers", "2"])
    try:
        server.process.wait(timeout=120)
    finally:
        stop(server)
    reasons = [line for line in server.log_text().splitlines() if "FORECAST_STORE=memory" in line]
    assert reasons, server.log_text()
    assert reasons[0].endswith(
        "ERROR app: FORECAST_STORE=memory with 2 uvicorn workers would split sessions between "
        "processes: use FORECAST_STORE=sqlite or redis, or one worker"
    )
    assert "Traceback" not in server.log_text()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_two_workers_share_every_session(
    store: str,
    tutorial_models_dir: Path,
    tmp_path: Path,
    forecaster: Forecaster,
    request: pytest.FixtureRequest,
) -> None:
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": store,
        "FORECAST_DATA_DIR": str(tmp_path / "data"),
    }
    if store == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        env |= {"FORECAST_REDIS_URL": redis.url, "FORECAST_REDIS_PREFIX": f"w-{tmp_path.name}"}
    got = []
    with uvicorn_server(env, tmp_path / "server.log", args=["--workers", "2"]) as server:
        for step, value in enumerate(SERIES):
            # A new connection each time: the kernel hands it to either worker.
            body = {"session_id": "both", "value": value, "step": step}
            response = httpx.post(f"{server.base_url}/predict", json=body, timeout=10)
            assert response.status_code == 200, response.text
            got.append(response.json()["prediction"])
    _state, expected = forecaster.feed(forecaster.zero_state(), SERIES)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("store", "args", "environ", "workers"),
    [
        ("sqlite", [], {}, ["--workers", "4"]),
        ("redis", [], {}, ["--workers", "4"]),
        ("memory", [], {}, ["--workers", "1"]),
        ("sqlite", ["--workers", "2"], {}, []),
        ("sqlite", [], {"UVICORN_WORKERS": "3"}, []),
        ("sqlite", [], {"WEB_CONCURRENCY": "3"}, []),
    ],
    ids=["sqlite", "redis", "memory", "option", "uvicorn-env", "web-concurrency"],
)
def test_serve_runs_a_worker_per_core_for_shared_stores(
    store: str, args: list[str], environ: dict[str, str], workers: list[str]
) -> None:
    command, _env = uvicorn_command(args, environ, store, 262144, 4, lambda: Path("/m"))
    assert command[1:] == ["-m", "uvicorn", "app.main:app", *args, *workers]


def test_serve_picks_the_websocket_settings_unless_told() -> None:
    _, env = uvicorn_command([], {}, "sqlite", 65536, cores=1)
    assert (env["UVICORN_WS"], env["UVICORN_WS_MAX_SIZE"]) == ("websockets-sansio", "65536")
    _, told = uvicorn_command([], {"UVICORN_WS": "wsproto"}, "sqlite", 65536, cores=1)
    assert told["UVICORN_WS"] == "wsproto"


@pytest.mark.parametrize(
    ("store", "args", "environ", "folder"),
    [
        ("sqlite", [], {}, "/made"),
        ("sqlite", ["--workers", "2"], {}, "/made"),
        ("sqlite", ["--workers", "1"], {}, None),
        ("memory", [], {}, None),
        ("redis", [], {"FORECAST_METRICS_SHARE_DIR": "/given"}, "/given"),
    ],
    ids=["per-core", "option", "one-worker", "memory", "given"],
)
def test_serve_gives_several_workers_a_folder_to_share_their_metrics(
    store: str, args: list[str], environ: dict[str, str], folder: str | None
) -> None:
    _, env = uvicorn_command(args, environ, store, 65536, 2, lambda: Path("/made"))
    assert env.get("FORECAST_METRICS_SHARE_DIR") == folder


@pytest.mark.slow
def test_every_scrape_counts_the_steps_of_both_workers(
    tutorial_models_dir: Path, tmp_path: Path
) -> None:
    env = {
        **sqlite_server_env(tutorial_models_dir, tmp_path),
        "FORECAST_METRICS_SHARE_DIR": str(tmp_path / "metrics"),  # as app.serve sets it
    }
    with uvicorn_server(env, tmp_path / "server.log", args=["--workers", "2"]) as server:
        for step, value in enumerate(SERIES):
            # A new connection each time: the kernel hands it to either worker.
            body = {"session_id": "counted", "value": value, "step": step}
            assert httpx.post(f"{server.base_url}/predict", json=body, timeout=10).is_success
        # Each worker writes its numbers every second: within seconds, every scrape shows all.
        in_a_row = _scrapes_showing(server.base_url, len(SERIES), wanted=10, within_s=30)
    assert in_a_row == 10


def _scrapes_showing(base_url: str, steps: int, wanted: int, within_s: float) -> int:
    """How many scrapes in a row (new connections: either worker answers) showed ``steps`` as
    ``forecast_steps_total``, stopping at ``wanted`` or after ``within_s``."""
    deadline = time.monotonic() + within_s
    in_a_row = 0
    while in_a_row < wanted and time.monotonic() < deadline:
        scraped = httpx.get(f"{base_url}/metrics", timeout=10).text
        in_a_row = in_a_row + 1 if _steps_total(scraped) == steps else 0
        time.sleep(0.05)
    return in_a_row


def _steps_total(exposition: str) -> float:
    (line,) = [line for line in exposition.splitlines() if line.startswith("forecast_steps_total")]
    return float(line.split()[-1])
