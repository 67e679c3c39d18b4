"""Sustained /predict load with faults: kill -9 a replica and restart it, restart Redis.

    python -m bench.fault_load [--duration 30] [--clients 8] [--sessions 40] [--cluster]

Two uvicorn replicas share one Redis (AOF, fsync always) on 127.0.0.1. Client threads feed their
sessions with ``step`` and retry every failed request (same step, same value) on either replica
until it is acknowledged. Meanwhile one replica is killed with SIGKILL and restarted, and Redis is
stopped and restarted. With ``--cluster`` the replicas share a Redis Cluster (three masters, three
replicas, ``FORECAST_REDIS_MIN_REPLICAS=1``) instead, and a master is killed with SIGKILL: its
replica is promoted, and the killed node comes back as the new master's replica. Afterwards
every session's acknowledged steps must form one unbroken sequence, the store must hold exactly
that many, and the session's state must equal a replay of the acknowledged values. Prints the
counts; exits 1 if anything was lost, duplicated or differs.

The replicas run with an API key and a per-key rate limit (``--rate-limit``, default
``1000/s burst 1000``; the clients send the key): the drill covers the service as deployed for
tenants, and a refusal for the rate (429) is retried like any other.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.local import RedisCluster, RedisServer, free_port, wait_for_200
from forecast_core.quiet_tensorflow import QUIET_TENSORFLOW_ENV

REPO = Path(__file__).resolve().parent.parent
# The drill's one client key: every request sends it.
DRILL_KEY = "fault-drill-key-0123456789"
DRILL_AUTH = {"authorization": f"Bearer {DRILL_KEY}"}
DEFAULT_RATE_LIMIT = "1000/s burst 1000"


class Replica:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {**env, "UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(self.port)}
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:app", "--no-access-log"],
                cwd=REPO,
                env={**os.environ, **QUIET_TENSORFLOW_ENV, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait:
            wait_for_200(f"{self.url}/health", self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class SessionLog:
    values: list[float] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)
    duplicated: int = 0
    gaps: int = 0


@dataclass
class Report:
    failover_s: float | None
    requests: int
    errors: dict[str, int]
    acknowledged_steps: int
    lost_steps: int
    duplicated_steps: int
    mismatched_sessions: int
    sessions: int

    @property
    def ok(self) -> bool:
        return (
            self.lost_steps == 0
            and self.duplicated_steps == 0
            and self.mismatched_sessions == 0
            and self.acknowledged_steps > 0
        )

    def lines(self) -> list[str]:
        errors = ", ".join(f"{kind} {count}" for kind, count in sorted(self.errors.items()))
        failover = (
            [f"master killed; its replica promoted after {self.failover_s:.1f} s"]
            if self.failover_s is not None
            else []
        )
        return [
            *failover,
            f"requests: {self.requests}",
            f"errors (each retried until acknowledged): {errors or 'none'}",
            f"acknowledged steps: {self.acknowledged_steps} over {self.sessions} sessions",
            f"lost steps: {self.lost_steps}",
            f"duplicated steps: {self.duplicated_steps}",
            f"sessions whose state differs from a replay: {self.mismatched_sessions}",
        ]


class SingleRedis:
    """The fault for one Redis node: stop it (SIGTERM, AOF with fsync always) and restart it."""

    def __init__(self, workdir: Path) -> None:
        self.server = RedisServer(workdir)
        self.env: dict[str, str] = {}
        self.failover_s: float | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def fault(self, pause: float) -> None:
        self.server.stop()
        time.sleep(pause)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


class ClusterRedis:
    """The fault for a Redis Cluster: SIGKILL a master; once its replica is promoted, restart the
    killed node, which rejoins as the new master's replica. Steps are acknowledged only once a
    replica has them, so the promoted replica holds every acknowledged step."""

    def __init__(self, workdir: Path) -> None:
        self.cluster = RedisCluster(workdir / "cluster")
        self.env = {"FORECAST_REDIS_MIN_REPLICAS": "1"}
        self.failover_s: float | None = None

    @property
    def url(self) -> str:
        return self.cluster.url

    def start(self) -> None:
        self.cluster.start()

    def fault(self, pause: float) -> None:
        # Not the node the service's URL names: a restarting replica must reach some node.
        victim = next(node for node in self.cluster.masters() if node.url != self.url)
        started = time.monotonic()
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait()
        victim.process = None
        self.cluster.wait_until_promoted(len(self.cluster.nodes) // 2)
        self.failover_s = time.monotonic() - started
        time.sleep(pause)
        victim.start()
        self.cluster.wait_until_healthy()

    def stop(self) -> None:
        self.cluster.stop()


def run(
    duration: float,
    clients: int,
    sessions: int,
    models: Path,
    workdir: Path,
    cluster: bool = False,
    rate_limit: str = DEFAULT_RATE_LIMIT,
) -> Report:
    """Drive the load, inject the faults, and check every session afterwards."""
    from app.forecaster import Forecaster
    from forecast_core.artifact import load_artifact

    forecaster = Forecaster.from_artifact(load_artifact(models), 1e-5)
    redis = ClusterRedis(workdir) if cluster else SingleRedis(workdir)
    redis.start()
    env = {
        "FORECAST_MODEL_DIR": str(models),
        "FORECAST_STORE": "redis",
        "FORECAST_REDIS_URL": redis.url,
        "FORECAST_API_KEYS": DRILL_KEY,
        "FORECAST_RATE_LIMIT": rate_limit,
        **redis.env,
    }
    replicas = [Replica(env, workdir / f"replica-{i}.log") for i in range(2)]
    for replica in replicas:
        replica.start()
    logs = {f"load-{i}": SessionLog() for i in range(sessions)}
    errors: collections.Counter[str] = collections.Counter()
    requests = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(index: int) -> None:
        nonlocal requests
        mine = [name for i, name in enumerate(logs) if i % clients == index]
        rng = random.Random(index)
        http = httpx.Client(timeout=5, headers=DRILL_AUTH)
        try:
            while time.monotonic() < stop_at:
                name = rng.choice(mine)
                log = logs[name]
                value = round(rng.uniform(0, 1), 4)
                body = {"session_id": name, "value": value, "step": len(log.values)}
                while True:  # the same request until acknowledged: retries must be safe
                    replica = rng.choice(replicas)
                    with lock:
                        requests += 1
                    try:
                        response = http.post(f"{replica.url}/predict", json=body)
                    except httpx.TransportError as error:
                        kind = type(error).__name__
                    else:
                        if response.status_code == 200:
                            break
                        kind = f"HTTP {response.status_code}"
                        if response.status_code < 500:
                            kind += f" {response.json()['error']['code']}"
                    with lock:
                        errors[kind] += 1
                    time.sleep(0.02)
                answer = response.json()
                if answer["step"] != len(log.values) + 1:
                    if answer["step"] <= len(log.values):
                        log.duplicated += 1
                    else:
                        log.gaps += answer["step"] - len(log.values) - 1
                log.values.append(value)
                log.predictions.append(answer["prediction"])
        finally:
            http.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(duration * 0.25)
        replicas[0].kill()  # SIGKILL: in-flight requests die with it
        time.sleep(duration * 0.1)
        replicas[0].start(wait=False)
        time.sleep(duration * 0.25)
        redis.fault(pause=duration * 0.05)
        for thread in threads:
            thread.join(timeout=duration + 120)
        wait_for_200(
            f"{replicas[0].url}/ready",
            replicas[0].process,  # type: ignore[arg-type]
            headers=DRILL_AUTH,
        )

        lost = duplicated = mismatched = 0
        with httpx.Client(timeout=10, headers=DRILL_AUTH) as http:
            for name, log in logs.items():
                duplicated += log.duplicated
                lost += log.gaps
                info = http.get(f"{replicas[1].url}/sessions/{name}")
                stored = info.json()["step"] if info.status_code == 200 else 0
                lost += max(0, len(log.values) - stored)
                duplicated += max(0, stored - len(log.values))
                if not log.values:
                    continue
                state, expected = forecaster.feed(forecaster.zero_state(), log.values)
                ahead = http.post(
                    f"{replicas[0].url}/forecast", json={"session_id": name, "horizon": 3}
                ).json()["forecasts"]
                replayed = forecaster.forecast_ahead(state, expected[-1], 3)
                if any(abs(a - b) > 1e-9 for a, b in zip(expected, log.predictions, strict=True)):
                    mismatched += 1
                elif any(abs(a - b) > 1e-9 for a, b in zip(ahead, replayed, strict=True)):
                    mismatched += 1
        return Report(
            failover_s=redis.failover_s,
            requests=requests,
            errors=dict(errors),
            acknowledged_steps=sum(len(log.values) for log in logs.values()),
            lost_steps=lost,
            duplicated_steps=duplicated,
            mismatched_sessions=mismatched,
            sessions=sessions,
        )
    finally:
        for replica in replicas:
            replica.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument(
        "--cluster", action="store_true", help="a Redis Cluster, and kill -9 one of its masters"
    )
    parser.add_argument(
        "--rate-limit", default=DEFAULT_RATE_LIMIT, help="FORECAST_RATE_LIMIT of the replicas"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        models = args.models
        if not (models / "latest").exists():
            models = Path(tmp) / "models"
            subprocess.run(
                [sys.executable, "-m", "training", "--out", str(models), "--quiet"],
                cwd=REPO,
                check=True,
            )
        report = run(
            args.duration,
            args.clients,
            args.sessions,
            models,
            Path(tmp),
            cluster=args.cluster,
            rate_limit=args.rate_limit,
        )
    for line in report.lines():
        print(line)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
