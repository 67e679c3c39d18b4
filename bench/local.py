"""Processes on 127.0.0.1 that the benchmarks and the tests both start: the one definition of
a free port, of waiting for an answer, and of a real redis-server."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_200(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float = 120,
    headers: dict[str, str] | None = None,
) -> None:
    """Poll ``url`` (sending ``headers``: an API key) until it answers 200; fail early if
    ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


class RedisServer:
    """redis-server on a free loopback port, AOF with fsync always in ``folder``; stop() and
    start() at will (the port and the data stay)."""

    def __init__(self, folder: Path, *, durable: bool = True, port: int | None = None) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError(
                "redis-server is not installed: run './run test', which installs it, "
                "or 'apt-get install redis-server'"
            )
        self.binary = binary
        self.folder = folder
        self.durable = durable
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # Extra redis-server arguments (for example compose's); later ones win.
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.folder), "--save", "", "--protected-mode", "no",
            *persistence, *self.extra_args,
        ]  # fmt: skip

    def start(self, prefix: list[str] | None = None) -> None:
        """Start and wait until it answers PING; ``prefix`` runs it under, say, taskset."""
        self.process = subprocess.Popen(
            [*(prefix or []), *self.command()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """SIGTERM: Redis finishes its AOF and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


def free_cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too."""
    while True:
        port = random.randrange(20000, 30000)
        if all(_is_free(candidate) for candidate in (port, port + 10000)):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisCluster:
    """A real Redis Cluster on loopback ports: ``masters`` primaries with one replica each, AOF
    with fsync always on every node, a short node timeout so a failover takes seconds."""

    def __init__(self, folder: Path, *, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.nodes: list[RedisServer] = []
        for index in range(2 * masters):
            node_folder = folder / f"node-{index}"
            node_folder.mkdir(parents=True, exist_ok=True)
            node = RedisServer(node_folder, port=free_cluster_port())
            node.extra_args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                # A replica may be promoted however long it was cut off: the test kills masters.
                "--cluster-replica-validity-factor", "0",
                # A (re)joining replica syncs at once instead of waiting for others to join.
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            self.nodes.append(node)
        self.replicas_per_master = 1

    @property
    def url(self) -> str:
        """Any one node's URL: the service discovers the rest."""
        return self.nodes[0].url

    def start(self) -> None:
        """Start every node, join them into a cluster, and wait until it serves every slot."""
        for node in self.nodes:
            node.start()
        binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [
                binary,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas_per_master),
                "--cluster-yes",
            ],  # fmt: skip
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_until_healthy()

    def wait_until_healthy(self, timeout: float = 60) -> None:
        """Until every running node says the cluster is ok and every master has its replicas."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy():
                return
            time.sleep(0.1)
        raise TimeoutError("the Redis Cluster did not become healthy")

    def _healthy(self) -> bool:
        running = [node for node in self.nodes if node.process is not None]
        try:
            if not self._all_ok():
                return False
            roles = self.roles()
        except redis.exceptions.RedisError:
            return False
        masters = [port for port, role in roles.items() if role == "master"]
        return len(masters) * (1 + self.replicas_per_master) == len(running) and all(
            self._replicas_online(port) == self.replicas_per_master for port in masters
        )

    def _replicas_online(self, port: int) -> int:
        """Replicas of the master on ``port`` that finished their sync (WAIT can count them)."""
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            info = client.info("replication")
        finally:
            client.close()
        return sum(
            1
            for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict) and value["state"] == "online"
        )

    def wait_until_promoted(self, masters: int, timeout: float = 60) -> None:
        """Until ``masters`` running nodes are masters and every node says the cluster is ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.masters()) == masters and self._all_ok():
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        raise TimeoutError("no replica was promoted")

    def _all_ok(self) -> bool:
        for node in self.nodes:
            if node.process is None:
                continue
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
            finally:
                client.close()
        return True

    def roles(self) -> dict[int, str]:
        """Port -> "master" or "slave" of every running node, as the nodes themselves say."""
        roles = {}
        for node in self.nodes:
            if node.process is None:
                continue
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                roles[node.port] = str(client.execute_command("ROLE")[0].decode())
            finally:
                client.close()
        return roles

    def masters(self) -> list[RedisServer]:
        roles = self.roles()
        return [node for node in self.nodes if roles.get(node.port) == "master"]

    def command_counts(self, command: str) -> dict[int, int]:
        """Port -> how many times each running node ran ``command`` (INFO commandstats)."""
        counts = {}
        for node in self.nodes:
            if node.process is None:
                continue
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                stats = client.info("commandstats").get(f"cmdstat_{command.lower()}", {})
            finally:
                client.close()
            counts[node.port] = int(stats.get("calls", 0))
        return counts

    def flush(self) -> None:
        for node in self.masters():
            client = redis.Redis(port=node.port)
            try:
                client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SwitchableModels:
    """A models folder whose ``latest`` (or ``<name>/latest``) is switched between artifacts,
    as a rollout or a rollback does: each artifact copied in under its version."""

    def __init__(self, folder: Path, name: str | None = None) -> None:
        self.root = folder
        self.folder = folder / name if name else folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, artifact: Path) -> str:
        """Copy the artifact ``artifact`` leads to (a folder or a models folder's ``latest``)
        in; its version, which :meth:`point_at` takes."""
        source = artifact.resolve()
        version = source.name
        if not (self.folder / version).exists():
            shutil.copytree(source, self.folder / version)
        return version

    def point_at(self, version: str) -> None:
        """Point ``latest`` at ``version``, atomically (a rename), as the training job does."""
        from forecast_core.artifact import point_latest_at

        point_latest_at(self.folder, version)
