"""The workers of one server sharing their metrics through a folder, so that a scrape that any
worker answers counts every worker's requests.

uvicorn's workers are separate processes, and a scrape reaches one of them: without this, each
answer held that worker's counts alone, and the counters seen by Prometheus jumped between
workers' totals. Each worker writes its numbers (a snapshot: :meth:`ServiceMetrics.snapshot`)
into its own file every ``METRICS_SHARE_INTERVAL_S`` and when it stops; the worker answering a
scrape adds the others' files to its own live numbers. A worker that has stopped still counts
(counters never go back); the open sockets it had do not (its file is no longer refreshed).
``app.serve`` gives each server run a fresh folder (``FORECAST_METRICS_SHARE_DIR``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

# How often each worker writes its numbers: a scrape sees the other workers' as of this long ago.
METRICS_SHARE_INTERVAL_S = 1.0
# A snapshot older than this is a stopped worker's: its counters count, its gauges do not.
LIVE_SNAPSHOT_S = 5 * METRICS_SHARE_INTERVAL_S
# The folders app.serve makes, in the system's temporary folder.
FOLDER_PREFIX = "forecast-metrics-"
# A folder written into within this time is in use, whoever owns it.
FOLDER_IN_USE_S = 60.0
_OWNER_FILE = "server.pid"

Snapshot = dict[str, Any]
# A sample's identity across workers: its name and its labels, sorted.
_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def snapshot_of(families: Iterable[Metric], now: float, number: int) -> Snapshot:
    """A worker's numbers as it would answer a scrape alone, at ``now``, in JSON's types;
    ``number``: its place among this worker's snapshots."""
    return {
        "at": now,
        "number": number,
        "families": [
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
            for family in families
        ],
    }


class MergedFamilies:
    """Every worker's numbers as one scrape's (for prometheus_client's ``generate_latest``).

    Counters and histograms are added up, sample by sample. A gauge is this worker's (the
    sessions in the shared store, whether a model is ready), except those in ``summed_gauges``
    (per worker, such as open sockets): added up over the workers whose snapshot is live."""

    def __init__(
        self, own: Snapshot, others: Sequence[Snapshot], summed_gauges: frozenset[str]
    ) -> None:
        self._own = own
        self._others = others
        self._summed_gauges = summed_gauges

    def collect(self) -> Iterator[Metric]:
        live = [o for o in self._others if o.get("at", 0.0) > self._own["at"] - LIVE_SNAPSHOT_S]
        for family in self._own["families"]:
            name, kind = family["name"], family["type"]
            if kind == "gauge" and name not in self._summed_gauges:
                added = [self._own]
            elif kind == "gauge":
                added = [self._own, *live]
            else:
                added = [self._own, *self._others]
            totals: dict[_SampleKey, float] = {}
            for snapshot in added:
                for sample_name, labels, value in _samples_of(snapshot, name, kind):
                    key = (sample_name, tuple(sorted(labels.items())))
                    totals[key] = totals.get(key, 0.0) + value
            metric = Metric(name, family["help"], kind)
            for (sample_name, labels), value in totals.items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric


def _samples_of(snapshot: Snapshot, name: str, kind: str) -> list[list[Any]]:
    for family in snapshot.get("families", ()):
        if family.get("name") == name and family.get("type") == kind:
            samples: list[list[Any]] = family.get("samples", [])
            return samples
    return []


class MetricsShare:
    """This worker's file in the server's folder, and the other workers' files."""

    def __init__(self, folder: Path, worker: str | None = None) -> None:
        self.folder = folder
        self._name = f"{worker or os.getpid()}.json"
        # Writes come from worker threads and, at shutdown, the event loop's: one at a time,
        # and never an older snapshot over a newer one.
        self._lock = threading.Lock()
        self._written = 0

    def publish(self, snapshot: Snapshot) -> None:
        """Write this worker's numbers (whole: a reader never sees half a file), unless a
        newer snapshot is written already."""
        with self._lock:
            if snapshot["number"] <= self._written:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{self._name}.", dir=self.folder)
            try:
                with os.fdopen(handle, "w") as file:
                    json.dump(snapshot, file)
                os.replace(temporary, self.folder / self._name)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            self._written = snapshot["number"]

    def others(self) -> list[Snapshot]:
        """The other workers' last numbers (a file that cannot be read is left out)."""
        snapshots = []
        for path in sorted(self.folder.glob("*.json")):
            if path.name == self._name:
                continue
            try:
                snapshot = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(snapshot, dict):
                snapshots.append(snapshot)
        return snapshots


def fresh_share_folder(temporary: Path | None = None) -> Path:
    """A new folder for one server run, owned by this process (app.serve, which becomes
    uvicorn's supervisor); the folders of server runs that have ended are removed first."""
    base = temporary if temporary is not None else Path(tempfile.gettempdir())
    for old in base.glob(f"{FOLDER_PREFIX}*"):
        if not _owner_alive(old) and not _written_lately(old):
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=base))
    (folder / _OWNER_FILE).write_text(str(os.getpid()))
    return folder


def _written_lately(folder: Path) -> bool:
    """A worker wrote into ``folder`` lately: its server runs, even if its process is not
    visible from here (another container sharing the temporary folder)."""
    recent = time.time() - FOLDER_IN_USE_S
    try:
        return any(path.stat().st_mtime > recent for path in folder.glob("*.json"))
    except OSError:
        return True  # changing under us: in use


def _owner_alive(folder: Path) -> bool:
    try:
        pid = int((folder / _OWNER_FILE).read_text())
    except (OSError, ValueError):
        return True  # not written yet (another server starting now): left alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return True
