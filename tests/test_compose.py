"""The Docker files, checked where no Docker engine runs.

Static: hadolint on the Dockerfile and docker-compose's own validation. Live: the compose topology
started as local processes, with the commands and environment read from docker-compose.yml itself
(and the nginx config file it mounts), then driven through nginx.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.local import RedisServer, free_port
from forecast_core.quiet_tensorflow import QUIET_TENSORFLOW_ENV
from tests.fake_dns import FakeDns
from tests.helpers import REPO, Server, stop, wait_until_ready

COMPOSE_FILE = REPO / "docker-compose.yml"
# Loopback addresses standing for the API containers (Linux routes all of 127/8 to lo).
REPLICA_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    venv_tool = Path(sys.executable).parent / name
    if found is None and venv_tool.exists():
        found = str(venv_tool)
    if found is None:
        pytest.fail(f"{name} is not installed; './run test' installs it")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        [_tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_declares_the_promised_topology() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert set(services) == {"train", "redis", "api", "lb"}
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    assert api["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--appendonly" in services["redis"]["command"]
    assert services["lb"]["ports"] == ["8000:8000"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2 and "HEALTHCHECK" in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE)


class Localizer:
    """Maps a container's view (volume paths, service addresses) onto this machine's."""

    def __init__(self, paths: dict[str, Path], addresses: dict[str, str]) -> None:
        self.paths = paths
        self.addresses = addresses

    def __call__(self, value: str) -> str:
        for container_path, local in self.paths.items():
            if value == container_path or value.startswith(container_path + "/"):
                value = str(local) + value[len(container_path) :]
        for address, local_address in self.addresses.items():
            value = value.replace(f"//{address}", f"//{local_address}")
        return value


def _render_template(template: str, env: dict[str, str]) -> str:
    # As the nginx image's entrypoint does: envsubst of the defined variables only, so that
    # nginx's own $host and friends stay.
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, template)


def _start_balancer(lb: dict[str, Any], nginx_dir: Path, upstream: str, dns: FakeDns) -> Server:
    """Debian's nginx with the site compose's ``lb`` mounts, rendered with its environment."""
    host_template = next(v.split(":")[0] for v in lb["volumes"] if "/etc/nginx/templates/" in v)
    template = (REPO / host_template).read_text()
    lb_env = {k: str(v) for k, v in lb["environment"].items()}
    assert lb_env["FORECAST_UPSTREAM"] == "api:8000"
    lb_port = free_port()
    lb_env.update(
        FORECAST_UPSTREAM=upstream,
        FORECAST_RESOLVER=f"127.0.0.1:{dns.port}",
        FORECAST_LISTEN_PORT=f"127.0.0.1:{lb_port}",
    )
    nginx_dir.mkdir()
    site = nginx_dir / "default.conf"
    site.write_text(_render_template(template, lb_env))
    (nginx_dir / "nginx.conf").write_text(
        f"""
worker_processes 1;
daemon off;
pid {nginx_dir}/nginx.pid;
error_log {nginx_dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {nginx_dir}/body;
    proxy_temp_path {nginx_dir}/proxy;
    fastcgi_temp_path {nginx_dir}/fastcgi;
    uwsgi_temp_path {nginx_dir}/uwsgi;
    scgi_temp_path {nginx_dir}/scgi;
    include {site};
}}
"""
    )
    nginx = subprocess.Popen(
        [_tool("nginx"), "-c", str(nginx_dir / "nginx.conf"), "-p", str(nginx_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Server(f"http://127.0.0.1:{lb_port}", nginx, nginx_dir / "error.log")


@pytest.mark.slow
def test_compose_topology_as_local_processes(tmp_path: Path) -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    redis_service, train, api, lb = (services[n] for n in ("redis", "train", "api", "lb"))

    # Redis, with the command compose runs (persistence on), on a free local port.
    redis_data = tmp_path / "redis-data"
    redis_data.mkdir()
    redis = RedisServer(redis_data)
    localize = Localizer(
        paths={"/models": tmp_path / "models", "/data": redis_data},
        addresses={"redis:6379": f"127.0.0.1:{redis.port}"},
    )
    redis_command = [localize(arg) for arg in redis_service["command"]]
    assert redis_command[0] == "redis-server"
    redis.extra_args = redis_command[1:]
    processes: list[subprocess.Popen[bytes]] = []
    replicas: list[Server] = []
    stack = contextlib.ExitStack()
    try:
        redis.start()

        # The one-shot training job: trains, then does nothing the second time.
        train_command = [localize(arg) for arg in train["command"]]
        assert train_command[:3] == ["python", "-m", "training"]
        train_command[0] = sys.executable
        env = {**os.environ, **QUIET_TENSORFLOW_ENV}
        subprocess.run(train_command, cwd=REPO, env=env, check=True, capture_output=True)
        again = subprocess.run(
            train_command, cwd=REPO, env=env, check=True, capture_output=True, text=True
        )
        assert "nothing to train" in again.stdout
        models_before = sorted(p.name for p in (tmp_path / "models").iterdir())
        assert len(models_before) == 2  # one version and latest

        # The API replicas: compose's command and environment, localized.
        # Each replica on its own loopback address and the same port, as containers are.
        api_command = api["command"]
        assert api_command[0] == "uvicorn"
        port = free_port()
        for host in REPLICA_HOSTS[: api["deploy"]["replicas"]]:
            replica_env = {k: localize(str(v)) for k, v in api["environment"].items()}
            assert replica_env["FORECAST_REDIS_URL"] == f"redis://127.0.0.1:{redis.port}/0"
            replica_env.update({"UVICORN_HOST": host, "UVICORN_PORT": str(port)})
            log = tmp_path / f"api-{host}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", *api_command[1:]],
                    cwd=REPO,
                    env={**env, **replica_env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            replicas.append(Server(f"http://{host}:{port}", process, log))
        for replica in replicas:
            wait_until_ready(replica)

        # nginx with the very template compose mounts, rendered as the nginx image does; "api"
        # resolves, through the resolver the template names, to every replica's address.
        dns = stack.enter_context(FakeDns({"api": list(REPLICA_HOSTS[: len(replicas)])}).running())
        balancer = _start_balancer(lb, tmp_path / "nginx", f"api:{port}", dns)
        processes.append(balancer.process)
        wait_until_ready(balancer)

        # Sessions through the balancer: every answer equals a single-process reference.
        from app.forecaster import Forecaster
        from forecast_core.artifact import load_artifact

        forecaster = Forecaster.from_artifact(load_artifact(tmp_path / "models"), 1e-5)
        series = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
        with httpx.Client(base_url=balancer.base_url, timeout=10) as client:
            for session in ("alpha", "beta", "gamma"):
                state = forecaster.zero_state()
                for step, value in enumerate(series):
                    body = {"session_id": session, "value": value, "step": step}
                    response = client.post("/predict", json=body)
                    assert response.status_code == 200, response.text
                    state, (expected,) = forecaster.feed(state, [value])
                    assert response.json()["prediction"] == pytest.approx(expected, abs=1e-12)
                    assert response.json()["step"] == step + 1
                assert round(response.json()["prediction"], 1) == 0.9
        for replica in replicas:
            metrics = httpx.get(f"{replica.base_url}/metrics").text
            labels = r'\{method="POST",route="/predict",status="200"\}'
            served = re.search(rf"forecast_http_requests_total{labels} (\d+)", metrics)
            assert served is not None and int(served.group(1)) > 0, "a replica served nothing"
    finally:
        stack.close()
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        for replica in replicas:
            stop(replica)
        redis.stop()


class _AddressEcho(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the address it serves on: which replica the balancer chose."""

    def do_GET(self) -> None:
        body = str(self.connection.getsockname()[0]).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _replica_stand_in(host: str, port: int) -> Iterator[None]:
    server = http.server.ThreadingHTTPServer((host, port), _AddressEcho)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_balancer_follows_a_replica_to_its_new_address(tmp_path: Path) -> None:
    lb = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["lb"]
    port = free_port()
    old, new = REPLICA_HOSTS[:2]
    with (
        _replica_stand_in(old, port),
        _replica_stand_in(new, port),
        FakeDns({"api": [old]}).running() as dns,
    ):
        balancer = _start_balancer(lb, tmp_path / "nginx", f"api:{port}", dns)
        try:
            wait_until_ready(balancer)
            assert httpx.get(balancer.base_url).text == old
            # The replica is restarted and comes back at another address.
            dns.answer("api", [new])
            deadline = time.monotonic() + 20  # nginx asks again after valid= (5 s)
            while httpx.get(balancer.base_url).text != new:
                assert time.monotonic() < deadline, "the balancer never re-resolved 'api'"
                time.sleep(0.2)
        finally:
            balancer.process.terminate()
            balancer.process.wait(timeout=20)
