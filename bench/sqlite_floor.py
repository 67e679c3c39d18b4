"""What SQLite itself costs per session step, against a whole /predict/many item on SQLite.

    python -m bench.sqlite_floor [--sessions 1000] [--items 100] [--batches 100]

The app (default model, no TensorFlow, SQLite store) is called in process: ``--sessions``
sessions are fed to full history windows through ``/predict/many`` (``--items`` items a request,
each another session), then timed there (the server's CPU per item: rules, codec, SQL, JSON).
Then, on the same file, the store's SQL alone with the rows as the store wrote them: per
transaction of ``--items`` sessions (WAL, ``synchronous=FULL``, as the store), one SELECT of
their rows and one UPDATE each writing their own bytes back; and the same with the record alone
(the window's ring set aside), the least any layout of one row a session writes per step (the
LSTM state changes at every step); and a row of four numbers appended to a log per step (no
read), what a store that logged values and folded them into the rows later would write at the
least. CPU time of this process, per session step; best of 3.

Issue 17's SQLite target, /predict/many at 10x /predict's requests/s, allows one-tenth of a
/predict request per item (README, "Many sessions per request"): this measures how much of that
SQLite's own work takes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.instructions_target import _NoTensorFlow, _post
from bench.serve_throughput import _ensure_model

_REPEATS = 3


def _bodies(sessions: int, items: int, count: int) -> list[bytes]:
    bodies, counter = [], 0
    for _ in range(count):
        batch = []
        for _ in range(items):
            counter += 1
            batch.append({"session_id": f"s-{counter % sessions}", "value": (counter % 97) / 97})
        bodies.append(json.dumps({"items": batch}).encode())
    return bodies


async def _serve_in_process(models: Path, data_dir: Path, args: argparse.Namespace) -> float:
    """CPU µs per item of /predict/many on SQLite, after the sessions' windows are full."""
    from asgi_lifespan import LifespanManager

    from app.forecaster import Forecaster
    from app.main import create_app
    from app.services import ModelSlot
    from app.settings import Settings
    from forecast_core.artifact import load_artifact

    artifact = load_artifact((models / "latest").resolve())
    model = ModelSlot(forecaster=Forecaster(artifact.session_step(), artifact.manifest))
    settings = Settings(model_dir=models, store="sqlite", data_dir=data_dir)
    app = create_app(settings, model=model)
    steps_to_fill = settings.session_history + 10
    fill = _bodies(args.sessions, args.items, steps_to_fill * args.sessions // args.items)
    timed = _bodies(args.sessions, args.items, args.batches)
    async with LifespanManager(app, startup_timeout=300) as manager:
        state = dict(getattr(manager, "_state", {}))
        for body in fill:
            await _post(manager.app, state, body, "/predict/many")
        best = math.inf
        for _ in range(_REPEATS):
            started = time.process_time()
            for body in timed:
                await _post(manager.app, state, body, "/predict/many")
            best = min(best, time.process_time() - started)
    return float(best / (args.batches * args.items) * 1e6)


def _sql_alone(path: Path, args: argparse.Namespace, *, ring: bool) -> tuple[float, int]:
    """CPU µs per session step of the store's SQL alone (``ring``: with the window's ring), and
    the bytes of a row."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    if not ring:
        connection.execute("UPDATE sessions SET ring = NULL")
    keys = [key for (key,) in connection.execute("SELECT key FROM sessions ORDER BY key")]
    row_bytes: int = connection.execute(
        "SELECT CAST(AVG(LENGTH(record) + IFNULL(LENGTH(ring), 0)) AS INTEGER) FROM sessions"
    ).fetchone()[0]
    best = math.inf
    for _ in range(_REPEATS):
        started = time.process_time()
        for batch in range(args.batches):
            at = batch * args.items % len(keys)
            chosen = (keys + keys)[at : at + args.items]
            marks = ",".join("?" * len(chosen))
            connection.execute("BEGIN IMMEDIATE")
            rows = connection.execute(
                f"SELECT key, record, last_used_at, ring FROM sessions WHERE key IN ({marks})",
                chosen,
            ).fetchall()
            connection.executemany(
                "UPDATE sessions SET record = ?, last_used_at = ?, ring = ? WHERE key = ?",
                [(record, used + 1.0, kept, key) for key, record, used, kept in rows],
            )
            connection.execute("COMMIT")
        best = min(best, time.process_time() - started)
    connection.close()
    return float(best / (args.batches * args.items) * 1e6), row_bytes


def _log_alone(path: Path, args: argparse.Namespace) -> float:
    """CPU µs per session step of appending the step's value to a log (a row of four numbers
    per step, 100 a transaction), with no read and no fold: what a store that logged values and
    folded them into the sessions' rows later would write per step at the least."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(
        "CREATE TABLE value_log (id INTEGER PRIMARY KEY, session INTEGER, step INTEGER, "
        "value REAL, at REAL)"
    )
    sessions = [rowid for (rowid,) in connection.execute("SELECT rowid FROM sessions")]
    best = math.inf
    step = 0
    for _ in range(_REPEATS):
        started = time.process_time()
        for batch in range(args.batches):
            at = batch * args.items % len(sessions)
            chosen = (sessions + sessions)[at : at + args.items]
            step += 1
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO value_log (session, step, value, at) VALUES (?, ?, ?, ?)",
                [(session, step, 0.5, 1000.0 + step) for session in chosen],
            )
            connection.execute("COMMIT")
        best = min(best, time.process_time() - started)
    connection.close()
    return float(best / (args.batches * args.items) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--batches", type=int, default=100, help="requests (transactions) timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-floor-") as tmp:
        models = _ensure_model(Path(tmp))
        sys.meta_path.insert(0, _NoTensorFlow())
        data_dir = Path(tmp) / "data"
        whole = asyncio.run(_serve_in_process(models, data_dir, args))
        path = data_dir / "sessions.sqlite3"
        with_ring, row_bytes = _sql_alone(path, args, ring=True)
        record_alone, record_bytes = _sql_alone(path, args, ring=False)
        log_alone = _log_alone(path, args)
    print(
        f"{args.sessions} sessions, full windows, {args.items} a transaction; CPU µs per "
        f"session step, best of {_REPEATS}:"
    )
    for label, value in (
        ("/predict/many item, in process (rules, codec, SQL, JSON)", whole),
        (f"SQL alone, rows as the store writes them ({row_bytes} bytes)", with_ring),
        (f"SQL alone, the record alone ({record_bytes} bytes)", record_alone),
        ("SQL alone, the value appended to a log (no read, no fold)", log_alone),
    ):
        print(f"  {label:<60}{value:7.1f}")


if __name__ == "__main__":
    main()
