"""/predict/many's latency as wrk reports it and as another client sees the same load.

    python -m bench.many_latency [--store memory] [--rounds 2] [--duration 8] [--floor]

wrk reports a p99 of about a second for /predict/many (100 items a request, 64 connections) on
the memory store, and times some requests out, while the server answers every request it has
parsed within tens of milliseconds (README, "Many sessions per request, and streaming"). This
loads one server (as bench.many_and_stream does: one worker on core 0, the load on core 1) in
interleaved rounds of wrk (bench/predict_many.lua) and of an asyncio client (uvloop, 64
connections, the same requests' shape, bodies built before the clock starts), and prints each
one's rate and latency, with the share of its core the server used meanwhile (when both keep the
server's core busy, a difference in latency is the client's, not the server's) and the share of
that core's time the hypervisor gave to something else (/proc/stat's steal: on a virtual machine,
time the server had work but no CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.many_and_stream import FLOOR, MANY_LUA
from bench.serve_throughput import _UNITS, _ensure_model, _parse, _pinned, _serve, _wrk

# Distinct request bodies the asyncio client cycles through (each of --items sessions).
_BODIES = 50


@dataclass(frozen=True)
class Latency:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    timeouts: int  # requests over 2 s (wrk's default timeout)


async def _many_load(
    host: str, port: int, connections: int, sessions: int, items: int, seconds: float
) -> Latency:
    bodies = []
    for index in range(_BODIES):
        first = index * items
        body = json.dumps(
            {
                "items": [
                    {"session_id": f"a-{(first + k) % sessions}", "value": ((first + k) % 97) / 97}
                    for k in range(items)
                ]
            }
        ).encode()
        head = (
            f"POST /predict/many HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        bodies.append(head.encode() + body)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        sent = index
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(bodies[sent % _BODIES])
            sent += 1
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"/predict/many answered {head[:40]!r}")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
        writer.close()

    begun = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(connections)))
    elapsed = time.perf_counter() - begun
    latencies.sort()
    return Latency(
        requests_per_s=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        max_ms=latencies[-1] * 1000,
        timeouts=sum(latency > 2.0 for latency in latencies),
    )


def _asyncio_client(base: str, args: argparse.Namespace) -> Latency:
    """The asyncio client in its own process on core 1 (as wrk runs)."""
    command = [
        sys.executable, "-m", "bench.many_latency", "--client", base,
        "--connections", str(args.connections), "--sessions", str(args.sessions),
        "--items", str(args.items), "--duration", str(args.duration),
    ]  # fmt: skip
    output = subprocess.run(
        _pinned(command, 1), capture_output=True, text=True, check=True, timeout=args.duration + 60
    ).stdout
    return Latency(**json.loads(output))


def _wrk_many(base: str, args: argparse.Namespace) -> Latency:
    output = _wrk(
        base, args.duration, args.connections, args.sessions, MANY_LUA, {"ITEMS": str(args.items)}
    )
    result = _parse("/predict/many", output)
    # "    Latency   127.58ms  167.55ms   1.93s    95.99%": average, deviation, most.
    most = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s", output, re.MULTILINE)
    timeouts = re.search(r"timeout (\d+)", output)
    return Latency(
        result.requests_per_s,
        result.p50_ms,
        result.p99_ms,
        float(most.group(1)) * _UNITS[most.group(2)] if most else math.nan,
        int(timeouts.group(1)) if timeouts else 0,
    )


def _cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


def _stolen_seconds(core: int) -> float:
    """Time the hypervisor ran something else while ``core`` had work (/proc/stat's steal)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            return int(line.split()[8]) / 100
    return math.nan


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--store", default="memory", help="memory, sqlite or floor")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8, help="seconds of load a run")
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        import uvloop

        host, _, port = args.client.removeprefix("http://").partition(":")
        latency = uvloop.run(
            _many_load(host, int(port), args.connections, args.sessions, args.items, args.duration)
        )
        print(json.dumps(latency.__dict__))
        return
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        env = {
            "FORECAST_MODEL_DIR": str(_ensure_model(workdir)),
            "FORECAST_STORE": "memory" if args.store == FLOOR else args.store,
            "FORECAST_DATA_DIR": str(workdir / "data"),
            "FORECAST_MAX_SESSIONS": str(10 * args.sessions),
            "FORECAST_MAX_ITEMS_PER_REQUEST": str(max(1000, args.items)),
        }
        served = "bench.floor_app:app" if args.store == FLOOR else "app.main:app"
        process, base = _serve(served, env, workdir / "server.log")
        try:
            _wrk(base, args.warm_up, args.connections, args.sessions, MANY_LUA)
            print(
                f"/predict/many, {args.items} items a request, {args.connections} connections, "
                f"{args.store} store; {args.duration} s a run"
            )
            print(f"{'client':<9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
                  f"{'over 2 s':>10}{'server CPU':>12}{'stolen':>8}")  # fmt: skip
            for _ in range(args.rounds):
                for name, run in (("wrk", _wrk_many), ("asyncio", _asyncio_client)):
                    time.sleep(2.0)  # the server finishes what the last run left queued
                    cpu, stolen = _cpu_seconds(process.pid), _stolen_seconds(0)
                    begun = time.perf_counter()
                    result = run(base, args)
                    elapsed = time.perf_counter() - begun
                    busy = (_cpu_seconds(process.pid) - cpu) / elapsed
                    stolen = (_stolen_seconds(0) - stolen) / elapsed
                    print(
                        f"{name:<9}{result.requests_per_s:>8.0f}{result.p50_ms:>9.1f}"
                        f"{result.p99_ms:>9.1f}{result.max_ms:>9.1f}{result.timeouts:>10}"
                        f"{busy:>11.0%}{stolen:>8.1%}",
                        flush=True,
                    )
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
