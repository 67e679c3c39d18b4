"""Sustained load with faults: kill -9 a replica and restart it, restart Redis, then switch the
served model.

    python -m bench.fault_load [--duration 30] [--clients 8] [--sessions 40] [--cluster]
                               [--no-switch] [--poll 1]

Two uvicorn replicas share one Redis (AOF, fsync always) on 127.0.0.1. Client threads feed their
sessions with ``step`` through /predict, /predict/many (four sessions a request) and /stream (a
socket each, reconnecting to either replica when it fails), a third of them each, and retry
every failed request or message (same steps, same values) on either replica until it is
acknowledged. Meanwhile one replica is killed with SIGKILL and restarted, and Redis is
stopped and restarted. With ``--cluster`` the replicas share a Redis Cluster (three masters, three
replicas, ``FORECAST_REDIS_MIN_REPLICAS=1``) instead, and a master is killed with SIGKILL: its
replica is promoted, and the killed node comes back as the new master's replica. Once both
replicas serve again, the models folder's ``latest`` is switched to another model (trained with
another seed) while the load goes on: both replicas must serve it within the poll interval
(``FORECAST_MODEL_POLL_S``) plus a second, with no 5xx, and each session's first forecast under
it must equal a fresh session of the new model fed the session's history window and the new
value. Afterwards every session's acknowledged steps must form one unbroken sequence, the store
must hold exactly that many, and every acknowledged forecast must equal a replay of the
acknowledged values (through the model each answer names, rebuilt from the window where the
model changed). Prints the counts; exits 1 if anything was lost, duplicated or differs.

The replicas run with an API key and a per-key rate limit (``--rate-limit``, default
``1000/s burst 1000``; the clients send the key): the drill covers the service as deployed for
tenants, and a refusal for the rate (429) is retried like any other.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from app.serve import WEBSOCKETS
from bench.local import RedisCluster, RedisServer, SwitchableModels, free_port, wait_for_200
from forecast_core.quiet_tensorflow import QUIET_TENSORFLOW_ENV

if TYPE_CHECKING:
    from app.forecaster import Forecaster
    from forecast_core.arrays import FloatArray

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
    versions: list[str] = field(default_factory=list)  # the model version of each answer
    duplicated: int = 0
    gaps: int = 0


@dataclass
class Switch:
    """The model switch and what followed it."""

    old: str
    new: str
    poll_s: float
    delays_s: list[float | None]  # per replica, from the switch until it served the new model
    errors_after: dict[str, int]  # failed requests after the switch, by kind
    switched_sessions: int = 0  # sessions that got an answer under the new model
    first_forecasts_equal: int = 0  # of those, first forecasts equal to the fresh replay

    @property
    def server_errors(self) -> int:
        return sum(n for kind, n in self.errors_after.items() if kind.startswith("HTTP 5"))

    @property
    def ok(self) -> bool:
        return (
            all(d is not None and d <= self.poll_s + 1.0 for d in self.delays_s)
            and self.server_errors == 0
            and self.switched_sessions > 0
            and self.first_forecasts_equal == self.switched_sessions
        )

    def line(self) -> str:
        delays = " and ".join("never" if d is None else f"{d:.1f} s" for d in self.delays_s)
        return (
            f"model switched mid-run {self.old} -> {self.new}: replicas served it after {delays}"
            f" (poll {self.poll_s:g} s); 5xx after the switch: {self.server_errors}; "
            f"first forecasts under it equal to a fresh new-model session fed the window and "
            f"the new value: {self.first_forecasts_equal} of {self.switched_sessions} sessions"
        )


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
    # Acknowledged steps by the way they were sent: /predict, /predict/many, /stream.
    by_kind: dict[str, int] = field(default_factory=dict)
    switch: Switch | None = None

    @property
    def ok(self) -> bool:
        return (
            self.lost_steps == 0
            and self.duplicated_steps == 0
            and self.mismatched_sessions == 0
            and self.acknowledged_steps > 0
            and (self.switch is None or self.switch.ok)
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
            f"acknowledged steps: {self.acknowledged_steps} over {self.sessions} sessions ("
            + ", ".join(f"{kind} {count}" for kind, count in self.by_kind.items())
            + ")",
            f"lost steps: {self.lost_steps}",
            f"duplicated steps: {self.duplicated_steps}",
            f"sessions whose state differs from a replay: {self.mismatched_sessions}",
            *([self.switch.line()] if self.switch is not None else []),
        ]


# What each client thread drives, by its index.
CLIENT_KINDS = ("predict", "many", "stream")


class Stream:
    """A /stream client that sends each message until it is answered without an error,
    reconnecting to any replica when its socket fails."""

    def __init__(
        self, rng: random.Random, replicas: list[Replica], count: Callable[[str | None], None]
    ) -> None:
        self._rng = rng
        self._replicas = replicas
        self._count = count
        self._socket: ClientConnection | None = None
        self._open = contextlib.ExitStack()  # closes the socket (connect is a context manager)

    def until_acknowledged(self, message: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(message)
        while True:
            try:
                if self._socket is None:
                    url = self._rng.choice(self._replicas).url.replace("http://", "ws://")
                    self._socket = self._open.enter_context(
                        connect(f"{url}/stream", open_timeout=5, additional_headers=DRILL_AUTH)
                    )
                self._socket.send(text)
                answer: dict[str, Any] = json.loads(self._socket.recv(timeout=5))
            except (OSError, TimeoutError, WebSocketException) as error:
                self.close()
                kind = f"/stream: {type(error).__name__}"
            else:
                if "error" not in answer:
                    self._count(None)
                    return answer
                kind = f"/stream: {answer['error']['code']}"
            self._count(kind)
            time.sleep(0.02)

    def close(self) -> None:
        self._open.close()
        self._socket = None


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
    switch_to: Path | None = None,
    poll_s: float = 1.0,
    rate_limit: str = DEFAULT_RATE_LIMIT,
) -> Report:
    """Drive the load, inject the faults, switch to the model in ``switch_to`` (a models folder,
    if given), and check every session afterwards."""
    from app.forecaster import Forecaster
    from app.settings import Settings
    from forecast_core.artifact import load_artifact

    served = SwitchableModels(workdir / "served-models")
    old = served.add(models / "latest" if (models / "latest").exists() else models)
    served.point_at(old)
    new = (
        served.add(switch_to / "latest" if (switch_to / "latest").exists() else switch_to)
        if (switch_to is not None)
        else None
    )
    forecasters = {
        version: Forecaster.from_artifact(load_artifact(served.folder / version), 1e-5)
        for version in filter(None, (old, new))
    }
    history = Settings().session_history
    redis = ClusterRedis(workdir) if cluster else SingleRedis(workdir)
    redis.start()
    env = {
        "FORECAST_MODEL_DIR": str(served.folder),
        "FORECAST_MODEL_POLL_S": str(poll_s),
        "FORECAST_STORE": "redis",
        "FORECAST_REDIS_URL": redis.url,
        "UVICORN_WS": WEBSOCKETS,  # as app.serve starts it
        "FORECAST_API_KEYS": DRILL_KEY,
        "FORECAST_RATE_LIMIT": rate_limit,
        **redis.env,
    }
    replicas = [Replica(env, workdir / f"replica-{i}.log") for i in range(2)]
    for replica in replicas:
        replica.start()
    logs = {f"load-{i}": SessionLog() for i in range(sessions)}
    errors: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter(dict.fromkeys(CLIENT_KINDS, 0))
    errors_after_switch: collections.Counter[str] = collections.Counter()
    switched = threading.Event()
    requests = 0
    lock = threading.Lock()
    stop = threading.Event()

    def count(kind: str | None = None) -> None:
        nonlocal requests
        with lock:
            requests += 1
            if kind is not None:
                errors[kind] += 1
                if switched.is_set():
                    errors_after_switch[kind] += 1

    def record(name: str, value: float, answer: dict[str, Any]) -> None:
        log = logs[name]
        if answer["step"] != len(log.values) + 1:
            if answer["step"] <= len(log.values):
                log.duplicated += 1
            else:
                log.gaps += answer["step"] - len(log.values) - 1
        log.values.append(value)
        log.predictions.append(answer["prediction"])
        log.versions.append(answer["model_version"])

    def http_until_acknowledged(
        http: httpx.Client, rng: random.Random, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The same request until it is acknowledged (200): retries must be safe."""
        while True:
            replica = rng.choice(replicas)
            try:
                response = http.post(f"{replica.url}{path}", json=body)
            except httpx.TransportError as error:
                kind = type(error).__name__
            else:
                if response.status_code == 200:
                    count()
                    answer: dict[str, Any] = response.json()
                    return answer
                kind = f"HTTP {response.status_code}"
                refused = response.json()
                if "results" in refused:  # 207: some items were refused, each says why
                    codes = {r["error"]["code"] for r in refused["results"] if "error" in r}
                    kind += f" {','.join(sorted(codes))}"
                elif response.status_code < 500:
                    kind += f" {refused['error']['code']}"
            count(f"{path}: {kind}")
            time.sleep(0.02)

    def client(index: int) -> None:
        """/predict, /predict/many (several sessions a request) or /stream, by ``index``."""
        mine = [name for i, name in enumerate(logs) if i % clients == index]
        rng = random.Random(index)
        http = httpx.Client(timeout=5, headers=DRILL_AUTH)
        stream = Stream(rng, replicas, count)
        kind = CLIENT_KINDS[index % len(CLIENT_KINDS)]
        try:
            while not stop.is_set():
                names = (
                    rng.sample(mine, min(len(mine), 4)) if kind == "many" else [rng.choice(mine)]
                )
                items: list[dict[str, Any]] = [
                    {"session_id": name, "value": round(rng.uniform(0, 1), 4),
                     "step": len(logs[name].values)}
                    for name in names
                ]  # fmt: skip
                if kind == "predict":
                    answers = [http_until_acknowledged(http, rng, "/predict", items[0])]
                elif kind == "many":
                    answer = http_until_acknowledged(http, rng, "/predict/many", {"items": items})
                    answers = answer["results"]
                else:
                    answers = [stream.until_acknowledged(items[0])]
                for item, answer in zip(items, answers, strict=True):
                    record(item["session_id"], item["value"], answer)
                with lock:
                    by_kind[kind] += len(items)
        finally:
            http.close()
            stream.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    switch: Switch | None = None
    try:
        time.sleep(duration * 0.2)
        replicas[0].kill()  # SIGKILL: in-flight requests die with it
        time.sleep(duration * 0.1)
        replicas[0].start(wait=False)
        time.sleep(duration * 0.15)
        redis.fault(pause=duration * 0.05)
        if new is not None:
            # Switch once both replicas serve again, so that each one's delay is its own poll.
            for replica in replicas:
                wait_for_200(
                    f"{replica.url}/ready",
                    replica.process,  # type: ignore[arg-type]
                    headers=DRILL_AUTH,  # /ready needs the key like every route but /health
                )
            time.sleep(max(0.0, started + duration * 0.6 - time.monotonic()))
            switch = _switch(served, replicas, old, new, poll_s, switched)
            # Keep the load on for a while under the new model.
            time.sleep(max(duration * 0.3, started + duration - time.monotonic()))
        else:
            time.sleep(max(0.0, started + duration - time.monotonic()))
        stop.set()
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
                replayed = _replay(log, forecasters, history, switch)
                ahead = http.post(
                    f"{replicas[0].url}/forecast", json={"session_id": name, "horizon": 3}
                ).json()
                if replayed is None:
                    mismatched += 1
                    continue
                forecaster = forecasters[ahead["model_version"]]
                state = replayed.get(ahead["model_version"])
                if state is None:
                    mismatched += 1
                    continue
                expected = forecaster.forecast_ahead(state, log.predictions[-1], 3)
                if any(
                    abs(a - b) > 1e-9 for a, b in zip(ahead["forecasts"], expected, strict=True)
                ):
                    mismatched += 1
        if switch is not None:
            switch.errors_after = dict(errors_after_switch)
        return Report(
            failover_s=redis.failover_s,
            requests=requests,
            errors=dict(errors),
            acknowledged_steps=sum(len(log.values) for log in logs.values()),
            lost_steps=lost,
            duplicated_steps=duplicated,
            mismatched_sessions=mismatched,
            sessions=sessions,
            by_kind=dict(by_kind),
            switch=switch,
        )
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()
        redis.stop()


def _switch(
    served: SwitchableModels,
    replicas: list[Replica],
    old: str,
    new: str,
    poll_s: float,
    switched: threading.Event,
) -> Switch:
    """Point ``latest`` at ``new`` and time each replica until its ``/models`` says so."""
    served.point_at(new)
    at = time.monotonic()
    switched.set()
    delays: list[float | None] = [None] * len(replicas)
    with httpx.Client(timeout=2, headers=DRILL_AUTH) as http:
        while time.monotonic() < at + poll_s + 10 and None in delays:
            for index, replica in enumerate(replicas):
                if delays[index] is not None:
                    continue
                try:
                    listed = http.get(f"{replica.url}/models").json()["models"]
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                if any(m["name"] == "default" and m["version"] == new for m in listed):
                    delays[index] = time.monotonic() - at
            time.sleep(0.02)
    return Switch(old=old, new=new, poll_s=poll_s, delays_s=delays, errors_after={})


def _replay(
    log: SessionLog,
    forecasters: dict[str, Forecaster],
    history: int,
    switch: Switch | None,
) -> dict[str, FloatArray] | None:
    """Replay a session's acknowledged values as the service must have applied them: under the
    model each answer names, the state rebuilt from the last ``history`` values wherever the
    model changed. The state after the last value under each model that answered last; None if
    an acknowledged forecast differs. Counts the switch's first forecasts on the way."""
    state: FloatArray | None = None
    current: str | None = None
    states: dict[str, FloatArray] = {}
    first_under_new = True
    for index, (value, version, served) in enumerate(
        zip(log.values, log.versions, log.predictions, strict=True)
    ):
        forecaster = forecasters[version]
        if version != current:
            window = log.values[max(0, index - history) : index] if current is not None else []
            state, _ = forecaster.feed(forecaster.zero_state(), window)
            current = version
        assert state is not None
        state, (prediction,) = forecaster.feed(state, [value])
        equal = abs(prediction - served) <= 1e-9
        if switch is not None and version == switch.new and first_under_new:
            first_under_new = False
            switch.switched_sessions += 1
            switch.first_forecasts_equal += int(equal)
        if not equal:
            return None
        states = {version: state}
    return states


def _train(out: Path, *options: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "training", "--out", str(out), "--quiet", *options],
        cwd=REPO,
        check=True,
    )


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
        "--no-switch", action="store_true", help="do not switch the served model mid-run"
    )
    parser.add_argument(
        "--poll", type=float, default=1.0, help="the replicas' FORECAST_MODEL_POLL_S"
    )
    parser.add_argument(
        "--rate-limit", default=DEFAULT_RATE_LIMIT, help="FORECAST_RATE_LIMIT of the replicas"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        models = args.models
        if not (models / "latest").exists():
            models = Path(tmp) / "models"
            _train(models)
        switch_to = None
        if not args.no_switch:
            switch_to = Path(tmp) / "switch-to"
            _train(switch_to, "--seed", "2", "--epochs", "300")
        report = run(
            args.duration,
            args.clients,
            args.sessions,
            models,
            Path(tmp),
            cluster=args.cluster,
            switch_to=switch_to,
            poll_s=args.poll,
            rate_limit=args.rate_limit,
        )
    for line in report.lines():
        print(line)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
