"""/predict/many and /stream against /predict, side by side on the same server, in one run.

    python -m bench.many_and_stream [--duration 8] [--rounds 3] [--stores memory,sqlite,redis]
        [--floor]

Per store, one server (one uvicorn worker, uvloop, httptools, no access log) pinned to core 0;
the load generators on core 1; 1,000 sessions. Interleaved rounds of:

- ``/predict``: wrk, 64 connections, one value a request;
- ``/predict/many``: wrk, 64 connections, ``--items`` (100) items a request, each another
  session; its steps/s are requests/s times the items;
- ``/stream``: ``--sockets`` (64) WebSockets from one asyncio process, each sending its next
  message as soon as the previous one is answered (as a wrk connection does), the latency of
  every message measured from its send to its answer.

``--floor`` adds bench.floor_app, served and loaded the same way: the three targets with the
service's parsing, validation and JSON answers but no sessions, model or store. Its rates are the
most the framework allows; each store's line under the table gives the server's time an item
beyond them (what the sessions cost, at the rates measured).

Targets (issue 17): /predict/many >= 20x /predict's steps/s on the memory store, 10x on SQLite,
5x on Redis; /stream >= 3x /predict's requests/s in messages/s with a p99 no worse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.serve import WEBSOCKETS
from bench.local import RedisServer
from bench.serve_throughput import Result, _ensure_model, _parse, _pinned, _serve, _wrk

MANY_LUA = Path(__file__).with_name("predict_many.lua")
# The name of bench.floor_app's line in the table.
FLOOR = "floor"


@dataclass(frozen=True)
class StreamResult:
    messages_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


async def _stream_load(url: str, sockets: int, sessions: int, seconds: float) -> StreamResult:
    import uvloop  # noqa: F401  (the event loop is chosen by the caller)
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def one(index: int) -> None:
        nonlocal errors
        counter = index
        async with connect(url, compression=None) as ws:
            while time.perf_counter() < deadline:
                counter += sockets
                text = json.dumps(
                    {"session_id": f"w-{counter % sessions}", "value": (counter % 97) / 97}
                )
                started = time.perf_counter()
                await ws.send(text)
                answer = await ws.recv()
                latencies.append(time.perf_counter() - started)
                if '"error"' in answer:  # a cheap check; the answers are not parsed
                    errors += 1

    begun = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(sockets)))
    elapsed = time.perf_counter() - begun
    latencies.sort()
    return StreamResult(
        messages_per_s=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        errors=errors,
    )


def _stream(base: str, args: argparse.Namespace, seconds: float) -> StreamResult:
    """Run the WebSocket load in its own process on core 1 (as wrk runs)."""
    url = base.replace("http://", "ws://") + "/stream"
    command = [
        sys.executable, "-m", "bench.many_and_stream", "--stream-client", url,
        "--sockets", str(args.sockets), "--sessions", str(args.sessions),
        "--duration", str(seconds),
    ]  # fmt: skip
    output = subprocess.run(
        _pinned(command, 1), capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return StreamResult(**json.loads(output))


def _stream_client(args: argparse.Namespace) -> None:
    import uvloop

    result = uvloop.run(
        _stream_load(args.stream_client, args.sockets, args.sessions, args.duration)
    )
    print(json.dumps(result.__dict__))


@dataclass
class Rounds:
    predict: list[Result]
    many: list[Result]
    stream: list[StreamResult]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8, help="seconds of load per target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warm-up",
        type=float,
        default=15,
        help="seconds of /predict/many before the first round (the memory store compiles its "
        "in-place step at the first such request)",
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sockets", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--stores", default="memory,sqlite,redis")
    parser.add_argument("--floor", action="store_true", help="also load bench.floor_app")
    parser.add_argument("--stream-client", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_client:
        _stream_client(args)
        return
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if args.floor:
        stores.append(FLOOR)
    seconds = int(args.duration)
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        workdir = Path(tmp)
        log = workdir / "servers.log"
        models = _ensure_model(workdir)
        redis: RedisServer | None = None
        servers = []
        try:
            for store in stores:
                env = {
                    "FORECAST_MODEL_DIR": str(models),
                    "FORECAST_STORE": "memory" if store == FLOOR else store,
                    "FORECAST_DATA_DIR": str(workdir / f"data-{store}"),
                    "FORECAST_MAX_SESSIONS": str(10 * args.sessions),
                    "FORECAST_MAX_ITEMS_PER_REQUEST": str(max(1000, args.items)),
                    "UVICORN_WS": os.environ.get("BENCH_WS", WEBSOCKETS),  # as app.serve's
                }
                if store == "redis":
                    redis = RedisServer(workdir, durable=False)
                    redis.start(prefix=_pinned([], 1))
                    env["FORECAST_REDIS_URL"] = redis.url
                served = "bench.floor_app:app" if store == FLOOR else "app.main:app"
                process, base = _serve(served, env, log)
                servers.append((store, process, base))
            results: dict[str, Rounds] = {store: Rounds([], [], []) for store in stores}
            many_env = {"ITEMS": str(args.items)}
            for round_number in range(args.rounds):
                for store, _, base in servers:
                    if round_number == 0:  # sessions exist, caches are hot
                        _wrk(base, 2, args.connections, args.sessions)
                        _wrk(
                            base,
                            int(args.warm_up),
                            args.connections,
                            args.sessions,
                            MANY_LUA,
                            many_env,
                        )
                    # Pauses between runs let the server finish what the last run left queued
                    # (wrk closes its connections with requests still in the server's hands).
                    time.sleep(2.0)
                    wrk = _wrk(base, seconds, args.connections, args.sessions)
                    results[store].predict.append(_parse("/predict", wrk))
                    time.sleep(2.0)
                    results[store].stream.append(_stream(base, args, seconds))
                    time.sleep(2.0)
                    wrk = _wrk(base, seconds, args.connections, args.sessions, MANY_LUA, many_env)
                    results[store].many.append(_parse("/predict/many", wrk))
        finally:
            for _, process, _ in servers:
                process.terminate()
                process.wait(timeout=30)
            if redis is not None:
                redis.stop()
    print(
        f"one server on core 0, load on core 1; {args.sessions} sessions; {seconds} s a run, "
        f"median of {args.rounds} interleaved rounds (os.cpu_count()={os.cpu_count()})"
    )
    print(
        f"{'store':<8}{'/predict req/s':>16}{'p99 ms':>8}"
        f"{'/many steps/s':>15}{'req/s':>8}{'p99 ms':>8}{'x':>7}"
        f"{'/stream msg/s':>15}{'p99 ms':>8}{'x':>7}  errors"
    )
    for store in stores:
        rounds = results[store]
        predict, steps, stream = _rates(rounds, args.items)
        predict_p99 = _median([r.p99_ms for r in rounds.predict])
        many_p99 = _median([r.p99_ms for r in rounds.many])
        stream_p99 = _median([r.p99_ms for r in rounds.stream])
        problems = {r.errors for r in rounds.predict + rounds.many} - {"none"}
        stream_errors = sum(r.errors for r in rounds.stream)
        print(
            f"{store:<8}{predict:>16.0f}{predict_p99:>8.2f}"
            f"{steps:>15.0f}{steps / args.items:>8.0f}{many_p99:>8.2f}"
            f"{steps / predict:>7.1f}"
            f"{stream:>15.0f}{stream_p99:>8.2f}{stream / predict:>7.2f}"
            f"  {', '.join(sorted(problems)) or 'none'}; stream errors {stream_errors}"
        )
    if FLOOR in results:
        _print_beyond_floor(results, args.items)


def _rates(rounds: Rounds, items: int) -> tuple[float, float, float]:
    """Median /predict requests/s, /predict/many steps/s and /stream messages/s."""
    return (
        _median([r.requests_per_s for r in rounds.predict]),
        _median([r.requests_per_s for r in rounds.many]) * items,
        _median([r.messages_per_s for r in rounds.stream]),
    )


def _print_beyond_floor(results: dict[str, Rounds], items: int) -> None:
    """Per store: the floor's rates as multiples of the store's /predict (the most each ratio
    could be), and the server's time an item beyond the floor's (1/rate - 1/floor rate)."""
    floor = _rates(results[FLOOR], items)
    print("floor's rate / the store's /predict, and server µs an item beyond the floor's:")
    for store, rounds in results.items():
        if store == FLOOR:
            continue
        predict, many, stream = _rates(rounds, items)
        beyond = [1e6 / rate - 1e6 / floor_rate for rate, floor_rate in zip(
            (predict, many, stream), floor, strict=True
        )]  # fmt: skip
        print(
            f"{store:<8}/many {floor[1] / predict:5.1f}x  /stream {floor[2] / predict:5.2f}x"
            f"  beyond: /predict {beyond[0]:6.1f}  /many {beyond[1]:5.1f}"
            f"  /stream {beyond[2]:5.1f}"
        )


if __name__ == "__main__":
    main()
