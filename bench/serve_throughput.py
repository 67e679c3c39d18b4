"""Throughput and p99 latency of POST /predict under wrk, next to a trivial FastAPI endpoint.

    python -m bench.serve_throughput [--duration 10] [--rounds 3] [--stores memory,sqlite,redis]
        [--compare-with CHECKOUT] [--warm-up 2]

``--stores`` may also name ``redis-cluster``: a local Redis Cluster (three masters, three
replicas) instead of one node, and ``redis-cluster-confirmed`` the same cluster with
``FORECAST_REDIS_MIN_REPLICAS=1`` (each step confirmed by a replica).

Every target is served by the same uvicorn command (one worker, uvloop, httptools, no access log)
pinned to core 0, with wrk on core 1: 64 connections over 1,000 sessions, on 127.0.0.1 only.
Targets: /predict (memory store) >= 90 % of the trivial endpoint's throughput with p99 <= 1.5x;
SQLite >= 80 % and Redis >= 50 % of the memory store.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.local import RedisCluster, RedisServer, free_port, wait_for_200
from forecast_core.quiet_tensorflow import QUIET_TENSORFLOW_ENV

REPO = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("predict.lua")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: str


def _pinned(command: list[str], core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *command]
    return command


def api_key_of(env: dict[str, str]) -> str:
    """The key wrk sends: the first plain key in the target's FORECAST_API_KEYS ('' for none)."""
    for entry in env.get("FORECAST_API_KEYS", "").split(","):
        key = entry.strip().removeprefix("admin:")
        if key and not key.startswith("sha256:"):
            return key
    return ""


def _serve(
    app: str, env: dict[str, str], log: Path, checkout: Path = REPO
) -> tuple[subprocess.Popen[bytes], str]:
    """Serve ``app`` from the code in ``checkout`` (this one, or another commit's work tree)."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            _pinned(command, 0),
            cwd=checkout,
            env={**os.environ, **QUIET_TENSORFLOW_ENV, "PYTHONPATH": str(checkout), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    probe = "/docs" if app.startswith("bench.trivial_app") else "/ready"
    key = api_key_of(env)
    try:
        wait_for_200(
            base + probe, process, headers={"authorization": f"Bearer {key}"} if key else None
        )
    except (RuntimeError, TimeoutError):
        process.kill()
        raise RuntimeError(f"{app} did not become ready: {log.read_text()[-2000:]}") from None
    return process, base


def _wrk(
    base: str,
    seconds: int,
    connections: int,
    sessions: int,
    script: Path = LUA,
    env: dict[str, str] | None = None,
    api_key: str = "",
    timeout_s: int = 2,
) -> str:
    """wrk's output; ``timeout_s``: a request slower than this is counted as a timeout and left
    out of the latencies (wrk's default, 2 s)."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s", "--latency",
        "-s", str(script), base,
    ]  # fmt: skip
    result = subprocess.run(
        _pinned(command, 1),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SESSIONS": str(sessions), "API_KEY": api_key, **(env or {})},
        timeout=seconds + timeout_s + 60,
    )
    return result.stdout


def _latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {percentile}% latency in wrk output:\n{output}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _parse(name: str, output: str) -> Result:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    problems = []
    if errors:
        problems.append(f"{errors.group(1)} non-2xx")
    if socket_errors:
        problems.append(socket_errors.group(1).strip())
    return Result(
        name=name,
        requests_per_s=float(rps.group(1)),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        errors=", ".join(problems) or "none",
    )


def measure(
    base: str, args: argparse.Namespace, name: str, warm_up: bool, api_key: str = ""
) -> Result:
    if warm_up:
        # Sessions exist and caches are hot; a long enough warm-up also fills the sessions'
        # history windows, so that the rounds measure records of their full size.
        _wrk(base, args.warm_up, args.connections, args.sessions, api_key=api_key)
    # Let the server finish with the previous run's connections: back to back, the new ones
    # queue behind the old ones' teardown and p99 measures that instead of the service.
    time.sleep(1.0)
    return _parse(name, _wrk(base, args.duration, args.connections, args.sessions, api_key=api_key))


def _median(results: list[Result]) -> Result:
    ranked = sorted(results, key=lambda r: r.requests_per_s)
    return ranked[len(ranked) // 2]


def _ensure_model(workdir: Path, checkout: Path = REPO) -> Path:
    """The default model as ``checkout``'s own training job writes it (artifact formats differ
    between releases); this checkout's ``models/`` when it has one."""
    models = checkout / "models"
    if checkout == REPO and (models / "latest").exists():
        return models
    models = workdir / f"models-{checkout.name}"
    subprocess.run(
        [sys.executable, "-m", "training", "--out", str(models), "--quiet"],
        cwd=checkout,
        env={**os.environ, **QUIET_TENSORFLOW_ENV, "PYTHONPATH": str(checkout)},
        check=True,
    )
    return models


def add_load_options(parser: argparse.ArgumentParser, *, warm_up: int, warm_up_help: str) -> None:
    """The wrk load's options, shared by the benchmarks that drive /predict this way."""
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per target; median kept")
    parser.add_argument("--warm-up", type=int, default=warm_up, help=warm_up_help)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_load_options(
        parser,
        warm_up=2,
        warm_up_help="seconds of load on each target before its first round; enough for 256 "
        "requests per session (about 60 s at 1,000 sessions) fills every session's history window",
    )
    parser.add_argument(
        "--stores",
        default="memory",
        help="comma list of memory, sqlite, redis, redis-cluster, redis-cluster-confirmed",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="also serve /predict (each of --stores) from another work tree, e.g. the commit "
        "before a change (git worktree add ../before HEAD~1), in the same interleaved rounds",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:NAME=VALUE[,NAME=VALUE]",
        help="also serve /predict (memory store) with these settings, e.g. "
        "'no intervals:FORECAST_INTERVAL_LEVELS=' (repeatable)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        log = workdir / "servers.log"
        models = _ensure_model(workdir)
        helpers: list[RedisServer | RedisCluster] = []
        redis_urls: dict[str, str] = {}
        servers: list[tuple[str, subprocess.Popen[bytes], str]] = []
        keys: dict[str, str] = {}  # target -> the API key wrk sends it

        def store_env(store: str, prefix: str) -> dict[str, str]:
            redis_kind = store.removesuffix("-confirmed")
            env = {
                "FORECAST_MODEL_DIR": str(models),
                "FORECAST_STORE": "redis" if store.startswith("redis") else store,
                "FORECAST_DATA_DIR": str(workdir / f"data-{store}-{prefix}"),
                "FORECAST_MAX_SESSIONS": str(10 * args.sessions),
                "FORECAST_REDIS_PREFIX": f"{prefix}-{store}",
                "FORECAST_REDIS_MIN_REPLICAS": "1" if store.endswith("-confirmed") else "0",
            }
            if store.startswith("redis"):
                if redis_kind not in redis_urls:
                    redis: RedisServer | RedisCluster
                    if redis_kind == "redis-cluster":
                        redis = RedisCluster(workdir / "cluster")
                        for node in redis.nodes:
                            node.extra_args += ["--appendonly", "no"]
                        redis.start()
                    else:
                        redis = RedisServer(workdir, durable=False)
                        redis.start(prefix=_pinned([], 1))
                    helpers.append(redis)
                    redis_urls[redis_kind] = redis.url
                env["FORECAST_REDIS_URL"] = redis_urls[redis_kind]
            return env

        try:
            process, base = _serve("bench.trivial_app:app", {}, log)
            servers.append(("trivial endpoint", process, base))
            for store in stores:
                process, base = _serve("app.main:app", store_env(store, "this"), log)
                servers.append((f"/predict ({store} store)", process, base))
            for variant in args.variant:
                label, _, assignments = variant.partition(":")
                env = store_env("memory", "variant")
                for assignment in filter(None, assignments.split(",")):
                    name, _, value = assignment.partition("=")
                    env[name.strip()] = value
                process, base = _serve("app.main:app", env, log)
                servers.append((f"/predict ({label})", process, base))
                keys[f"/predict ({label})"] = api_key_of(env)
            if args.compare_with is not None:
                checkout = args.compare_with.resolve()
                other_models = str(_ensure_model(workdir, checkout))
                for store in stores:
                    env = {**store_env(store, "other"), "FORECAST_MODEL_DIR": other_models}
                    process, base = _serve("app.main:app", env, log, checkout)
                    servers.append((f"/predict ({store}, {args.compare_with.name})", process, base))
            # Rounds interleave the targets, so a noisy moment on the machine hits them alike;
            # each target reports its median round.
            rounds: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
            for round_number in range(args.rounds):
                for name, _, base in servers:
                    rounds[name].append(
                        measure(base, args, name, round_number == 0, keys.get(name, ""))
                    )
            results = [_median(rounds[name]) for name, _, _ in servers]
        finally:
            for _, process, _ in servers:
                process.terminate()
                process.wait(timeout=30)
            for helper in helpers:
                helper.stop()

    baseline = results[0]
    memory = next((r for r in results if "memory" in r.name), None)
    print(
        f"wrk: {args.connections} connections, {args.sessions} sessions, {args.duration} s, "
        f"median of {args.rounds} interleaved rounds after {args.warm_up} s of warm-up; "
        "servers on core 0, wrk on core 1"
    )
    header = f"{'target':<34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
    print(f"{header}{'vs trivial':>12}{'vs memory':>11}  errors")
    for r in results:
        vs_memory = f"{r.requests_per_s / memory.requests_per_s:.0%}" if memory else "-"
        print(
            f"{r.name:<34}{r.requests_per_s:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{r.requests_per_s / baseline.requests_per_s:>12.0%}{vs_memory:>11}  {r.errors}"
        )
    if memory is not None:
        print(
            f"memory store: {memory.requests_per_s / baseline.requests_per_s:.0%} of trivial "
            f"throughput (target >= 90%), p99 {memory.p99_ms / baseline.p99_ms:.2f}x "
            "(target <= 1.5x)"
        )


if __name__ == "__main__":
    main()
