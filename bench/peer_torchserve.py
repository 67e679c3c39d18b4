"""POST /predict next to a peer: TorchServe's stateful inference (sequence batching), one core each.

    python -m bench.peer_torchserve [--duration 10] [--rounds 3] [--warm-up 20]
        [--torchserve-config BATCH:DELAY_MS:IDLE_MS] [--peer-venv /work/peer/.venv]
        [--workdir /work/peer] [--models MODELS] [--check-only] [--skip-check] [--no-freeze]

Run from the checkout with the service's venv. Needs: wrk; Java 17 on PATH; and a SEPARATE venv
(``--peer-venv``) holding TorchServe, its archiver and torch, never the service's venv:

    python3.11 -m venv /work/peer/.venv
    /work/peer/.venv/bin/pip install torch torchserve==0.12.0 torch-model-archiver==0.12.0 \
        pyyaml numpy

The peer serves the service's own trained artifact (``--models``, else ``models/`` of this checkout,
else a model trained once into ``WORKDIR/models-<checkout>`` as bench/serve_throughput.py trains
one): its ``weights.npz`` and ``manifest.json`` go into a model archive with
``bench/torchserve/``'s handler (the same LSTM step, scaling and state per sequence as /predict)
and ``model-config.yaml`` (one worker, ``sequenceBatching: true``; batchSize, maxBatchDelay and
sequenceMaxIdleMSec set by ``--torchserve-config``, repeatable: one TorchServe per value, default
1024:1:60000). TorchServe 0.12 needs batchSize above the sequences in use (its frontend waits on
each live sequence with one of batchSize + 1 threads: at 64 it serves 28 req/s here) and an
idle time longer than a sequence's gaps (with 1 ms, sequence groups expire and reopen, and a
request can be lost for good: the check below hangs).

Before any load the script checks that both answer the same forecasts (to 1e-6) for a few
sequences of values fed side by side (so that TorchServe batches them). Then, as
bench/serve_throughput.py: every server pinned to core 0 (TorchServe's Java frontend and its
Python worker alike; the service under the same uvicorn command, memory store), wrk on core 1,
64 connections over 1,000 sessions/sequences (the sequence id in TorchServe's
``ts_request_sequence_id`` header, bench/torchserve_predict.lua), on 127.0.0.1 only, rounds
interleaved after a warm-up, the median round kept. While one target is under load the other
servers are SIGSTOPped (an idle TorchServe takes 5-8 % of core 0 polling its queues;
``--no-freeze`` leaves them running). TorchServe's work files (archives, logs, model store) go
under ``--workdir``; its servers are stopped with ``torchserve --stop`` at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.local import free_port, wait_for_200
from bench.serve_throughput import (
    LUA,
    Result,
    _ensure_model,
    _median,
    _parse,
    _pinned,
    _serve,
    _wrk,
    add_load_options,
)
from forecast_core.artifact import load_artifact, resolve_artifact_dir

REPO = Path(__file__).resolve().parent.parent
HANDLER_DIR = Path(__file__).with_name("torchserve")
HANDLER = HANDLER_DIR / "stateful_lstm_handler.py"
MODEL_CONFIG = HANDLER_DIR / "model-config.yaml"
LOG_CONFIG = HANDLER_DIR / "log4j2.xml"
TORCHSERVE_LUA = Path(__file__).with_name("torchserve_predict.lua")
MODEL_NAME = "lstm"
# The largest difference allowed between the two servers' forecasts (both compute in float64).
TOLERANCE = 1e-6


@dataclass(frozen=True)
class PeerConfig:
    """The TorchServe frontend's settings that matter for throughput on one core."""

    batch_size: int
    max_batch_delay_ms: int
    idle_ms: int

    @classmethod
    def parse(cls, text: str) -> PeerConfig:
        batch, delay, idle = (int(part) for part in text.split(":"))
        return cls(batch, delay, idle)

    @property
    def label(self) -> str:
        return f"TorchServe b{self.batch_size} d{self.max_batch_delay_ms}ms i{self.idle_ms}ms"


@dataclass
class TorchServe:
    """One TorchServe (Java frontend + one Python worker) in its own folder and ports."""

    venv: Path
    folder: Path
    config: PeerConfig
    inference_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}"

    def _env(self) -> dict[str, str]:
        tmp = self.folder / "tmp"  # its pid file, Java's tmpdir and the worker's socket
        tmp.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.folder / "logs"),
            "METRICS_LOCATION": str(self.folder / "logs"),
            "OMP_NUM_THREADS": "1",
        }

    def build_archive(self, artifact_dir: Path) -> Path:
        """lstm.mar from the artifact's weights and manifest, the handler and the config."""
        store = self.folder / "model-store"
        store.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = yaml.safe_load(MODEL_CONFIG.read_text())
        settings.update(
            batchSize=self.config.batch_size,
            maxBatchDelay=self.config.max_batch_delay_ms,
            sequenceMaxIdleMSec=self.config.idle_ms,
        )
        config_file = self.folder / "model-config.yaml"
        config_file.write_text(yaml.safe_dump(settings, sort_keys=False))
        command = [
            str(self.venv / "bin" / "torch-model-archiver"),
            "--model-name", MODEL_NAME, "--version", "1.0",
            "--serialized-file", str(artifact_dir / "weights.npz"),
            "--extra-files", str(artifact_dir / "manifest.json"),
            "--handler", str(HANDLER),
            "--config-file", str(config_file),
            "--export-path", str(store), "--force",
        ]  # fmt: skip
        subprocess.run(command, check=True, env=self._env())
        return store

    def start(self, artifact_dir: Path) -> None:
        store = self.build_archive(artifact_dir)
        properties = self.folder / "config.properties"
        properties.write_text(
            "\n".join(
                [
                    f"inference_address=http://127.0.0.1:{self.inference_port}",
                    f"management_address=http://127.0.0.1:{self.management_port}",
                    f"metrics_address=http://127.0.0.1:{free_port()}",
                    f"grpc_inference_port={free_port()}",
                    f"grpc_management_port={free_port()}",
                    "default_workers_per_model=1",
                    "install_py_dep_per_model=false",
                    "disable_system_metrics=true",
                    "async_logging=true",
                    "job_queue_size=1000",
                ]
            )
            + "\n"
        )
        command = [
            str(self.venv / "bin" / "torchserve"),
            "--start", "--foreground", "--ncs", "--disable-token-auth",
            "--model-store", str(store), "--models", f"{MODEL_NAME}={MODEL_NAME}.mar",
            "--ts-config", str(properties), "--log-config", str(LOG_CONFIG),
        ]  # fmt: skip
        with (self.folder / "torchserve.out").open("ab") as out:
            self.process = subprocess.Popen(
                _pinned(command, 0),
                cwd=self.folder,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 180) -> None:
        """Until the model's one worker is READY (the inference port answers before that)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.management_port}/models/{MODEL_NAME}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited: {self._log_tail()}")
            try:
                answer = httpx.get(url, timeout=1)
                if answer.status_code == 200:
                    workers = answer.json()[0].get("workers", [])
                    if workers and all(w.get("status") == "READY" for w in workers):
                        wait_for_200(f"{self.base}/ping", self.process)
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"TorchServe's worker not ready in {timeout} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        texts = []
        for name in ("torchserve.out", "logs/ts_log.log", "logs/model_log.log"):
            path = self.folder / name
            if path.exists():
                texts.append(f"--- {name}\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(texts)

    def batch_stats(self) -> str:
        """The handler's last report of its mean batch size (in the model log)."""
        log = self.folder / "logs" / "model_log.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        reports = [line for line in lines if "mean batch size" in line]
        return reports[-1].split(" - ", 1)[-1] if reports else "no report"

    def stop(self) -> None:
        if self.process is None:
            return
        subprocess.run(
            [str(self.venv / "bin" / "torchserve"), "--stop"],
            env=self._env(),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


@dataclass(frozen=True)
class Target:
    name: str
    base: str
    script: Path
    pid: int  # the process whose tree serves it (frozen while another target is measured)


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (TorchServe: its CLI, Java, the Python worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


@contextmanager
def frozen(targets: list[Target]) -> Iterator[None]:
    """SIGSTOP the process trees of ``targets`` for the block, SIGCONT after: the servers not
    being measured take no time from core 0 (an idle TorchServe's frontend wakes every
    maxBatchDelay ms)."""
    pids = [pid for target in targets for pid in _process_tree(target.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def check_same_forecasts(
    ours: str, peer: str, prefix: str, sequences: int = 8, length: int = 30
) -> float:
    """Feed the same values to fresh sessions of ours and sequences of the peer (ids starting
    with ``prefix``), the sequences side by side so that TorchServe batches them; the largest
    difference of their forecasts (raises if above TOLERANCE)."""

    def one_sequence(n: int) -> float:
        sid = f"{prefix}-{n}"
        worst = 0.0
        with httpx.Client(timeout=10) as client:
            for step in range(length):
                value = round(math.sin(0.3 * step + n) * (n + 1) + 0.1 * step, 4)
                a = client.post(f"{ours}/predict", json={"session_id": sid, "value": value})
                b = client.post(
                    f"{peer}/predictions/{MODEL_NAME}",
                    json={"value": value},
                    headers={"ts_request_sequence_id": sid},
                )
                if a.status_code != 200 or b.status_code != 200:
                    raise RuntimeError(
                        f"check: {a.status_code} {a.text!r}; {b.status_code} {b.text!r}"
                    )
                mine, theirs = a.json()["prediction"], b.json()["prediction"]
                if abs(mine - theirs) > TOLERANCE:
                    raise RuntimeError(
                        f"check: {sid} value {step}: ours {mine!r}, TorchServe {theirs!r}"
                    )
                worst = max(worst, abs(mine - theirs))
        return worst

    with ThreadPoolExecutor(sequences) as pool:
        return max(pool.map(one_sequence, range(sequences)))


def measure(
    target: Target, others: list[Target], args: argparse.Namespace, warm_up: bool
) -> Result:
    env = {"MODEL": MODEL_NAME}
    with frozen(others if args.freeze_others else []):
        if warm_up:
            _wrk(target.base, args.warm_up, args.connections, args.sessions, target.script, env)
        time.sleep(1.0)  # let the server finish with the previous run's connections
        output = _wrk(
            target.base, args.duration, args.connections, args.sessions, target.script, env
        )
    return _parse(target.name, output)


def models_folder(args: argparse.Namespace) -> Path:
    """The service's models folder: --models, this checkout's, or one trained once under
    --workdir (as serve_throughput trains one)."""
    if args.models is not None:
        return Path(args.models)
    trained: Path = args.workdir / f"models-{REPO.name}"
    if (trained / "latest").exists():
        return trained
    return Path(_ensure_model(args.workdir))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_load_options(
        parser,
        warm_up=20,
        warm_up_help="seconds of load on each target before its first round (the JVM needs ~20 s "
        "to compile its hot paths: with 5 s TorchServe measured ~20%% lower)",
    )
    parser.add_argument(
        "--torchserve-config",
        action="append",
        type=PeerConfig.parse,
        metavar="BATCH:DELAY_MS:IDLE_MS",
        help="batchSize, maxBatchDelay and sequenceMaxIdleMSec of one TorchServe (repeatable; "
        "default 1024:1:60000)",
    )
    parser.add_argument("--peer-venv", type=Path, default=Path("/work/peer/.venv"))
    parser.add_argument("--workdir", type=Path, default=Path("/work/peer"))
    parser.add_argument("--models", type=Path, default=None, help="the service's models folder")
    parser.add_argument(
        "--check-only", action="store_true", help="only check both answer the same forecasts"
    )
    parser.add_argument(
        "--skip-check",
        action="store_true",
        help="measure without the check (for settings under which TorchServe loses requests)",
    )
    parser.add_argument(
        "--no-freeze",
        dest="freeze_others",
        action="store_false",
        help="leave the other servers running (not SIGSTOPped) while one target is measured",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    if not (args.peer_venv / "bin" / "torchserve").exists():
        sys.exit(f"bench: no torchserve in {args.peer_venv} (see this module's docstring)")
    configs: list[PeerConfig] = args.torchserve_config or [PeerConfig(1024, 1, 60000)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    run = args.workdir / time.strftime("run-%Y%m%d-%H%M%S")
    run.mkdir()
    models = models_folder(args).resolve()
    artifact_dir = resolve_artifact_dir(models)
    artifact = load_artifact(artifact_dir)  # verifies the checksum the handler checks too
    print(
        f"artifact {artifact.version}: {artifact.manifest.architecture.units} units, transform "
        f"{artifact.manifest.transform}, scaling {artifact.manifest.scaling}"
    )

    peers: list[TorchServe] = []
    ours: subprocess.Popen[bytes] | None = None
    try:
        env = {
            "FORECAST_MODEL_DIR": str(models),
            "FORECAST_STORE": "memory",
            "FORECAST_DATA_DIR": str(run / "data"),
            "FORECAST_MAX_SESSIONS": str(10 * args.sessions),
        }
        ours, our_base = _serve("app.main:app", env, run / "uvicorn.log")
        targets = [Target("/predict (memory store)", our_base, LUA, ours.pid)]
        for index, config in enumerate(configs):
            peer = TorchServe(args.peer_venv, run / f"torchserve-{index}", config)
            peers.append(peer)
            peer.start(artifact_dir)
            if not args.skip_check:
                worst = check_same_forecasts(our_base, peer.base, f"check{index}")
                print(
                    f"{config.label}: same forecasts as /predict (largest difference {worst:.1e})"
                )
            assert peer.process is not None
            targets.append(Target(config.label, peer.base, TORCHSERVE_LUA, peer.process.pid))
        if args.check_only:
            return
        rounds: dict[str, list[Result]] = {t.name: [] for t in targets}
        for round_number in range(args.rounds):
            for target in targets:
                others = [t for t in targets if t is not target]
                rounds[target.name].append(measure(target, others, args, round_number == 0))
        results = [_median(rounds[t.name]) for t in targets]
    finally:
        for peer in peers:
            peer.stop()
        if ours is not None:
            ours.terminate()
            ours.wait(timeout=30)

    print(
        f"wrk: {args.connections} connections, {args.sessions} sessions, {args.duration} s, "
        f"median of {args.rounds} interleaved rounds after {args.warm_up} s of warm-up; "
        "servers on core 0, wrk on core 1"
    )
    ours_result = results[0]
    print(f"{'target':<36}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ours/peer':>11}  errors")
    for r in results:
        ratio = ours_result.requests_per_s / r.requests_per_s if r.requests_per_s else math.inf
        print(
            f"{r.name:<36}{r.requests_per_s:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{ratio:>10.2f}x  {r.errors}"
        )
    for name, runs in rounds.items():
        print(f"  rounds of {name}: " + ", ".join(f"{r.requests_per_s:.0f}" for r in runs))
    for peer in peers:
        print(f"  {peer.config.label} handler: {peer.batch_stats()}")
    print(f"work files: {run}")


if __name__ == "__main__":
    main()
