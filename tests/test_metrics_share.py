"""Workers sharing their metrics through a folder: a scrape any of them answers counts all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from app.main import publish_metrics
from app.metrics import ServiceMetrics
from app.metrics_share import LIVE_SNAPSHOT_S, MetricsShare, Snapshot, fresh_share_folder
from app.settings import Settings

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


def test_an_older_snapshot_written_late_never_replaces_a_newer(tmp_path: Path) -> None:
    """At shutdown the last write races the periodic one still in its thread."""
    clock = Clock()
    worker = _worker(tmp_path, "a", clock)
    older = worker.snapshot()
    worker.count_steps(4)
    newer = worker.snapshot()
    assert worker.share is not None
    worker.share.publish(newer)
    worker.share.publish(older)
    (written,) = MetricsShare(tmp_path, worker="reader").others()
    assert written["number"] == newer["number"]


class FailingOnce(MetricsShare):
    """A share whose first write fails (a full disk, say), then works."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, worker="a")
        self.calls = 0

    def publish(self, snapshot: Snapshot) -> None:
        self.calls += 1
        if self.calls == 1:
            raise OSError(28, "No space left on device")
        super().publish(snapshot)


async def test_a_failed_write_is_tried_again_at_the_next_interval(tmp_path: Path) -> None:
    share = FailingOnce(tmp_path)
    task = asyncio.create_task(publish_metrics(ServiceMetrics(share, Clock()), interval_s=0))
    for _ in range(1_000):  # event-loop turns, not time: the interval is 0
        if share.calls >= 3 or task.done():
            break
        await asyncio.sleep(0)
    task.cancel()
    assert share.calls >= 3  # the loop outlived the failure
    assert len(MetricsShare(tmp_path, worker="reader").others()) == 1


def test_a_folder_written_lately_is_kept_whoever_owns_it(tmp_path: Path) -> None:
    """Its owner may run in another container, its process invisible from here."""
    used = tmp_path / "forecast-metrics-elsewhere"
    used.mkdir()
    (used / "server.pid").write_text("999999999")  # no such process here
    (used / "123.json").write_text("{}")
    fresh_share_folder(tmp_path)
    assert used.is_dir()


def test_an_empty_share_folder_setting_means_none() -> None:
    assert Settings.model_validate({"metrics_share_dir": ""}).metrics_share_dir is None
