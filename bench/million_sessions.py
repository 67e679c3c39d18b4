"""Memory per session in each store, and /predict throughput with a million live sessions.

    python -m bench.million_sessions [--sessions 1000000] [--stores memory,sqlite,redis]
        [--duration 8] [--rounds 3]

1. Memory per session: the store is filled with ``--sessions`` sessions as one /predict leaves
   them; the memory store's growth of this process's resident memory, the SQLite file's pages,
   Redis's ``used_memory`` (INFO memory), each divided by the number of sessions.
2. Throughput: per store, one server whose store holds 1,000 sessions and one whose store holds
   ``--sessions``; wrk drives /predict over all of each server's sessions in turn (with a million,
   almost every request is for a session not touched for a while), 64 connections, in
   interleaved rounds, median kept. Target: the million at least 80 % of the thousand.
Servers on core 0, wrk and Redis on core 1, all on 127.0.0.1; everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from app.settings import Settings
from app.stores.memory import MemoryStore
from app.stores.redis import RedisStore
from app.stores.sqlite import SqliteStore
from bench.local import RedisServer
from bench.serve_throughput import Result, _ensure_model, _median, _pinned, _serve, measure
from bench.sessions_fill import fill, session_after_one_step

SMALL = 1000
TTL_S = 3600


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_store_bytes(count: int, models: Path) -> float:
    """Resident memory this process gains per session held in a memory store."""
    record = session_after_one_step(models, time.time())
    gc.collect()
    before = _resident_bytes()
    store = MemoryStore(ttl_s=TTL_S, max_sessions=2 * count)
    asyncio.run(fill(store, count, record))
    gc.collect()
    grown = _resident_bytes() - before
    del store
    return grown / count


def sqlite_store_bytes(count: int, models: Path, folder: Path) -> float:
    """Bytes of the SQLite file per session, filled through the store."""

    async def run() -> Path:
        store = await SqliteStore.open(
            folder / "sessions.sqlite3", ttl_s=TTL_S, max_sessions=2 * count
        )
        try:
            await fill(store, count, session_after_one_step(models, time.time()))
        finally:
            await store.close()
        return store.path

    path = asyncio.run(run())
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(page_size) / count


def redis_store_bytes(count: int, models: Path, server: RedisServer) -> float:
    """Redis ``used_memory`` per session, filled through the store (its hash, its window's ring,
    its live-set entry)."""
    client = redis.Redis(port=server.port)
    before = int(client.info("memory")["used_memory"])

    async def run() -> None:
        store = RedisStore(
            server.url,
            prefix="forecast",
            ttl_s=TTL_S,
            max_sessions=2 * count,
            history=Settings().session_history,  # the server's: its ring size
        )
        try:
            await fill(store, count, session_after_one_step(models, time.time()))
        finally:
            await store.close()

    asyncio.run(run())
    grown = int(client.info("memory")["used_memory"]) - before
    client.close()
    return grown / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--stores", default="memory,sqlite,redis")
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--warm-up",
        type=int,
        default=2,
        help="seconds of load on each server before its first round (a million sessions' "
        "windows cannot be filled: the sessions stay as one /predict left them)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]

    with tempfile.TemporaryDirectory(prefix="million-") as tmp:
        workdir = Path(tmp)
        log = workdir / "servers.log"
        models = _ensure_model(workdir)
        per_session: dict[str, float] = {}
        redis_servers: dict[int, RedisServer] = {}
        servers: list[tuple[str, int, subprocess.Popen[bytes], str]] = []
        try:
            for count in (SMALL, args.sessions):
                env = {
                    "FORECAST_MODEL_DIR": str(models),
                    "FORECAST_MAX_SESSIONS": str(2 * args.sessions),
                    "FORECAST_SESSION_TTL_S": str(TTL_S),
                }
                for store in stores:
                    started = time.monotonic()
                    app = "app.main:app"
                    if store == "memory":
                        if count == args.sessions:
                            per_session[store] = memory_store_bytes(count, models)
                        app = "bench.preloaded_app:app"
                        store_env = {"FORECAST_STORE": "memory", "BENCH_SESSIONS": str(count)}
                    elif store == "sqlite":
                        folder = workdir / f"sqlite-{count}"
                        size = sqlite_store_bytes(count, models, folder)
                        if count == args.sessions:
                            per_session[store] = size
                        store_env = {"FORECAST_STORE": "sqlite", "FORECAST_DATA_DIR": str(folder)}
                    else:
                        server = RedisServer(workdir / f"redis-{count}", durable=False)
                        server.folder.mkdir()
                        server.start(prefix=_pinned([], 1))
                        redis_servers[count] = server
                        size = redis_store_bytes(count, models, server)
                        if count == args.sessions:
                            per_session[store] = size
                        store_env = {"FORECAST_STORE": "redis", "FORECAST_REDIS_URL": server.url}
                    process, base = _serve(app, {**env, **store_env}, log)
                    servers.append((store, count, process, base))
                    print(
                        f"{store}: {count} sessions loaded and served "
                        f"in {time.monotonic() - started:.0f} s",
                        flush=True,
                    )
            # Interleaved rounds: a noisy moment on the machine hits every server alike.
            rounds: dict[tuple[str, int], list[Result]] = {(s, c): [] for s, c, _, _ in servers}
            for round_number in range(args.rounds):
                for store, count, _, base in servers:
                    run_args = argparse.Namespace(**{**vars(args), "sessions": count})
                    result = measure(base, run_args, f"{store} {count}", round_number == 0)
                    rounds[(store, count)].append(result)
        finally:
            for _, _, process, _ in servers:
                process.terminate()
                process.wait(timeout=60)
            for server in redis_servers.values():
                server.stop()

    print(f"memory per session, {args.sessions} sessions as one /predict leaves them:")
    for store, size in per_session.items():
        print(f"  {store:<8}{size:>8.0f} bytes")
    print(
        f"/predict throughput, wrk {args.connections} connections over all of the server's "
        f"sessions, {args.duration} s, median of {args.rounds} interleaved rounds:"
    )
    header = f"  {'store':<8}{'sessions':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print(f"{header}{'vs 1000':>9}  errors")
    for store in stores:
        small = _median(rounds[(store, SMALL)])
        for count in (SMALL, args.sessions):
            r = _median(rounds[(store, count)])
            ratio = r.requests_per_s / small.requests_per_s
            print(
                f"  {store:<8}{count:>10}{r.requests_per_s:>9.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
                f"{ratio:>9.0%}  {r.errors}"
            )


if __name__ == "__main__":
    main()
