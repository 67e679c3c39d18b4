"""/predict/many's latency as wrk reports it and as another client sees the same load.

    python -m bench.many_latency [--store memory] [--rounds 2] [--duration 8]

wrk reports a p99 of about a second for /predict/many (100 items a request, 64 connections) on
the memory store, while the server answers every request it has parsed within tens of
milliseconds (README, "Many sessions per request, and streaming"). This loads one server (as
bench.many_and_stream does: one worker on core 0, the load on core 1) in interleaved rounds of
wrk (bench/predict_many.lua, the same sessions) and of an asyncio client (uvloop, 64
connections, bodies built before the clock starts), and prints for each run:

- requests/s and the latency's p50, p99 and maximum. wrk's p99 is after its correction for
  coordinated omission (wrk 4's ``stats_correct``: each latency of at least two intervals, an
  interval being a connection's mean time a request, adds samples one, two, ... intervals
  shorter); the asyncio client's p99 is given raw and with that same correction. wrk runs with
  a 30 s timeout, so that its slow requests stay in its latencies;
- the share of core 0 the server used over the load (when both clients keep it busy, a
  difference in latency is the client's, not the server's) and the share the hypervisor gave to
  something else (/proc/stat's steal: time the server had work but no CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.many_and_stream import FLOOR, MANY_LUA
from bench.serve_throughput import _UNITS, _ensure_model, _parse, _pinned, _serve, _wrk

# Distinct request bodies the asyncio client cycles through.
_BODIES = 50
# The core the server is pinned to (bench.serve_throughput._serve).
_SERVER_CORE = 0
# wrk's timeout here: long enough that no request of these runs is left out of its latencies.
_WRK_TIMEOUT_S = 30
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Latency:
    requests_per_s: float
    p50_ms: float
    p99_ms: float  # as the client counts it (wrk: corrected; asyncio: raw)
    p99_as_wrk_ms: float  # after wrk's correction
    max_ms: float
    errors: int  # answers other than 200
    server_cpu: float  # share of the server's core it used over the load
    stolen: float  # share of that core's time the hypervisor gave to something else


class _Usage:
    """The server's CPU time and its core's stolen time from here on."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._begun = time.perf_counter()
        self._cpu = _cpu_seconds(pid)
        self._stolen = _stolen_seconds(_SERVER_CORE)

    def shares(self) -> tuple[float, float]:
        """(server CPU, stolen) as shares of the time since the start."""
        elapsed = time.perf_counter() - self._begun
        return (
            (_cpu_seconds(self._pid) - self._cpu) / elapsed,
            (_stolen_seconds(_SERVER_CORE) - self._stolen) / elapsed,
        )


def _cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def _stolen_seconds(core: int) -> float:
    """Time the hypervisor ran something else while ``core`` had work (/proc/stat's steal)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            return int(line.split()[8]) / _TICKS_PER_S
    return math.nan


def as_wrk_counts(latencies: list[float], connections: int, elapsed_s: float) -> list[float]:
    """``latencies`` with the samples wrk 4 adds before it reports (``stats_correct``), sorted."""
    per_connection = len(latencies) // connections
    if not per_connection:
        return sorted(latencies)
    interval = elapsed_s / per_connection
    counted = list(latencies)
    for latency in latencies:
        if latency >= 2 * interval:
            added = latency - interval
            while added > interval:
                counted.append(added)
                added -= interval
    return sorted(counted)


def _p99(ordered: list[float]) -> float:
    return ordered[int(len(ordered) * 0.99)]


def _bodies(host: str, sessions: int, items: int) -> list[bytes]:
    """Requests of the Lua script's sessions (thread 1's), one per item each."""
    requests = []
    for index in range(_BODIES):
        first = index * items
        body = json.dumps(
            {
                "items": [
                    {"session_id": f"t1-{(first + k) % sessions}", "value": ((first + k) % 97) / 97}
                    for k in range(items)
                ]
            }
        ).encode()
        head = (
            f"POST /predict/many HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def _many_load(base: str, server_pid: int, args: argparse.Namespace) -> Latency:
    host, _, port = base.removeprefix("http://").partition(":")
    requests = _bodies(host, args.sessions, args.items)
    latencies: list[float] = []
    errors = 0

    async def one(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        sent = index
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(requests[sent % _BODIES])
            sent += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            errors += not head.startswith(b"HTTP/1.1 200 ")
        writer.close()

    usage = _Usage(server_pid)
    deadline = time.perf_counter() + args.duration
    begun = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(args.connections)))
    elapsed = time.perf_counter() - begun
    server_cpu, stolen = usage.shares()
    ordered = sorted(latencies)
    return Latency(
        requests_per_s=len(ordered) / elapsed,
        p50_ms=ordered[len(ordered) // 2] * 1000,
        p99_ms=_p99(ordered) * 1000,
        p99_as_wrk_ms=_p99(as_wrk_counts(ordered, args.connections, elapsed)) * 1000,
        max_ms=ordered[-1] * 1000,
        errors=errors,
        server_cpu=server_cpu,
        stolen=stolen,
    )


def _asyncio_client(base: str, server_pid: int, args: argparse.Namespace) -> Latency:
    """The asyncio client in its own process on core 1 (as wrk runs)."""
    command = [
        sys.executable, "-m", "bench.many_latency", "--client", base,
        "--server-pid", str(server_pid), "--connections", str(args.connections),
        "--sessions", str(args.sessions), "--items", str(args.items),
        "--duration", str(args.duration),
    ]  # fmt: skip
    output = subprocess.run(
        _pinned(command, 1), capture_output=True, text=True, check=True, timeout=args.duration + 60
    ).stdout
    return Latency(**json.loads(output))


def _wrk_many(base: str, server_pid: int, args: argparse.Namespace) -> Latency:
    usage = _Usage(server_pid)
    output = _wrk(
        base,
        args.duration,
        args.connections,
        args.sessions,
        MANY_LUA,
        {"ITEMS": str(args.items)},
        timeout_s=_WRK_TIMEOUT_S,
    )
    server_cpu, stolen = usage.shares()
    result = _parse("/predict/many", output)
    # "    Latency   127.58ms  167.55ms   1.93s    95.99%": average, deviation, most.
    most = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s", output, re.MULTILINE)
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Latency(
        requests_per_s=result.requests_per_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        p99_as_wrk_ms=result.p99_ms,
        max_ms=float(most.group(1)) * _UNITS[most.group(2)] if most else math.nan,
        errors=int(statuses.group(1)) if statuses else 0,
        server_cpu=server_cpu,
        stolen=stolen,
    )


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
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        import uvloop

        latency = uvloop.run(_many_load(args.client, args.server_pid, args))
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
            items = {"ITEMS": str(args.items)}
            _wrk(base, args.warm_up, args.connections, args.sessions, MANY_LUA, items)
            print(
                f"/predict/many, {args.items} items a request, {args.connections} connections, "
                f"{args.store} store; {args.duration} s a run"
            )
            print(
                f"{'client':<9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'as wrk':>9}{'max ms':>9}"
                f"{'errors':>8}{'server CPU':>12}{'stolen':>8}"
            )
            for _ in range(args.rounds):
                for name, run in (("wrk", _wrk_many), ("asyncio", _asyncio_client)):
                    time.sleep(2.0)  # the server finishes what the last run left queued
                    result = run(base, process.pid, args)
                    print(
                        f"{name:<9}{result.requests_per_s:>8.0f}{result.p50_ms:>9.1f}"
                        f"{result.p99_ms:>9.1f}{result.p99_as_wrk_ms:>9.1f}{result.max_ms:>9.1f}"
                        f"{result.errors:>8}{result.server_cpu:>12.0%}{result.stolen:>8.1%}",
                        flush=True,
                    )
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
