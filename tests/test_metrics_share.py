"""Workers sharing their metrics through a folder: a scrape any of them answers counts all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.metrics import ServiceMetrics
from app.metrics_share import LIVE_SNAPSHOT_S, MetricsShare, fresh_share_folder

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _worker(folder: Path, name: str, clock: Clock) -> ServiceMetrics:
    return ServiceMetrics(MetricsShare(folder, worker=name), clock)


def _value(exposition: bytes, sample: str) -> float:
    """The value of the line that starts with ``sample`` (its name and labels)."""
    (line,) = [line for line in exposition.decode().splitlines() if line.startswith(sample + " ")]
    return float(line.rsplit(" ", 1)[1])


async def test_a_scrape_adds_up_every_workers_counters_and_histograms(tmp_path: Path) -> None:
    clock = Clock()
    first, second = _worker(tmp_path, "a", clock), _worker(tmp_path, "b", clock)
    first.observe("/predict", "POST", 200, 0.001)
    first.count_steps(2)
    for _ in range(3):
        second.observe("/predict", "POST", 200, 0.003)
    second.count_steps(3)
    await second.publish()
    scraped = await first.render_all()
    labels = 'method="POST",route="/predict",status="200"'  # as the text format sorts them
    bucket = "forecast_http_request_duration_seconds_bucket"
    assert _value(scraped, "forecast_steps_total") == 5
    assert _value(scraped, f"forecast_http_requests_total{{{labels}}}") == 4
    assert _value(scraped, f'{bucket}{{le="0.002",{labels}}}') == 1
    assert _value(scraped, f'{bucket}{{le="0.005",{labels}}}') == 4


async def test_a_worker_that_stopped_keeps_its_counts_but_not_its_open_sockets(
    tmp_path: Path,
) -> None:
    clock = Clock()
    first, stopped = _worker(tmp_path, "a", clock), _worker(tmp_path, "b", clock)
    first.stream_sockets.inc()
    stopped.stream_sockets.inc()
    stopped.count_steps(7)
    await stopped.publish()
    assert _value(await first.render_all(), "forecast_stream_sockets") == 2
    clock.now += LIVE_SNAPSHOT_S + 1  # its file is no longer refreshed
    scraped = await first.render_all()
    assert _value(scraped, "forecast_stream_sockets") == 1
    assert _value(scraped, "forecast_steps_total") == 7


async def test_a_shared_gauge_is_the_answering_workers_own(tmp_path: Path) -> None:
    """Sessions live in the shared store: each worker counts them all, so they are not added."""
    clock = Clock()
    first, second = _worker(tmp_path, "a", clock), _worker(tmp_path, "b", clock)
    first.active_sessions.set(40)
    second.active_sessions.set(40)
    await second.publish()
    assert _value(await first.render_all(), "forecast_active_sessions") == 40


def test_a_new_server_run_removes_the_folders_of_runs_that_ended(tmp_path: Path) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    old = tmp_path / "forecast-metrics-old"
    old.mkdir()
    (old / "server.pid").write_text(ended.stdout.decode().strip())
    running = fresh_share_folder(tmp_path)  # owned by this process, which is alive
    fresh = fresh_share_folder(tmp_path)
    assert not old.exists()
    assert running.is_dir() and fresh.is_dir() and running != fresh
