"""README's first set-up command, `./run serve`: trains the tutorial model when no particular one
was asked for, then serves; refuses early, in one line, what would otherwise fail late.

Each test runs the real script from a scratch checkout (links to this repository's code) so that
the models it trains land in a temporary folder, with a virtual environment that stands for this
one (its stamp says the packages are installed).
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.local import free_port
from tests.helpers import REPO, Server, stop, wait_until_ready

# What TensorFlow's C++ side prints at start-up unless it is kept quiet.
TENSORFLOW_START_UP_LINES = ("absl::InitializeLog", "oneDNN custom operations")


def _install_stamp(venv: Path) -> Path:
    # The stamp `run` looks for: the packages were installed for this pyproject.toml.
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return venv / f".installed-{digest}"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder laid out as a fresh clone: `run`, the code and pyproject.toml, no models/."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("run", "pyproject.toml", "app", "training", "forecast_core", "README.md"):
        (root / name).symlink_to(REPO / name)
    return root


@pytest.fixture
def installed_venv(tmp_path: Path) -> Path:
    """A virtual environment `run` takes as installed: this interpreter's, stamped."""
    venv = tmp_path / "venv"
    venv.mkdir()
    real = Path(sys.prefix)
    for entry in real.iterdir():
        if not entry.name.startswith(".installed-"):
            (venv / entry.name).symlink_to(entry)
    _install_stamp(venv).touch()
    return venv


def _clean_environment() -> dict[str, str]:
    """This environment without the settings a newcomer would not have made."""
    unset = ("FORECAST_MODEL_DIR", "HOST", "PORT", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
    return {key: value for key, value in os.environ.items() if key not in unset}


def _run_serve(
    checkout: Path, venv: Path, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`./run serve` that is expected to stop by itself (a refusal)."""
    return subprocess.run(
        [str(checkout / "run"), "serve", *args],
        cwd=checkout,
        env={**_clean_environment(), "FORECAST_VENV": str(venv), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_run_serve_trains_the_tutorial_model_then_serves_on_loopback(
    checkout: Path, installed_venv: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {**_clean_environment(), "FORECAST_VENV": str(installed_venv), "PORT": str(port)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(checkout / "run"), "serve"],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_ready(server, timeout=300)
        assert (checkout / "models" / "latest" / "manifest.json").is_file()
        text = server.log_text()
        assert "training on tutorial" in text
        assert f"Uvicorn running on http://127.0.0.1:{port}" in text
        response = httpx.post(
            f"{server.base_url}/predict", json={"session_id": "readme", "value": 0.0}
        )
        assert response.status_code == 200 and round(response.json()["prediction"], 1) == 0.1
        assert (checkout / "data" / "sessions.sqlite3").is_file()  # the default store
        assert [line for line in TENSORFLOW_START_UP_LINES if line in text] == []
    finally:
        stop(server)


def test_run_serve_refuses_a_model_dir_that_holds_no_model(
    checkout: Path, installed_venv: Path
) -> None:
    result = _run_serve(checkout, installed_venv, {"FORECAST_MODEL_DIR": "models_sin"})
    assert result.returncode == 2
    assert result.stderr.startswith("run: FORECAST_MODEL_DIR=models_sin holds no model")
    assert result.stderr.count("\n") == 1
    assert not (checkout / "models_sin").exists() and not (checkout / "models").exists()


@pytest.mark.parametrize(
    "how", ["PORT", "--port", "--port="], ids=["env-PORT", "option-port", "option-port-equals"]
)
def test_run_serve_refuses_a_busy_port_before_loading_anything(
    checkout: Path, installed_venv: Path, busy_port: int, how: str
) -> None:
    if how == "PORT":
        env, args = {"PORT": str(busy_port)}, []
    else:
        # PORT names a free port: the option wins, as uvicorn's own would.
        env = {"PORT": str(free_port())}
        args = [f"--port={busy_port}"] if how.endswith("=") else ["--port", str(busy_port)]
    result = _run_serve(checkout, installed_venv, {"HOST": "127.0.0.1", **env}, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"run: cannot serve on 127.0.0.1:{busy_port} (")
    assert f"./run serve --port {busy_port + 1}" in result.stderr
    assert not (checkout / "models").exists()  # refused before training


def test_run_serve_on_a_public_interface_without_keys_warns(
    checkout: Path, installed_venv: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _run_serve(
            checkout,
            installed_venv,
            {"HOST": "0.0.0.0", "PORT": str(port), "FORECAST_API_KEYS": ""},
        )
    assert result.stderr.startswith(f"run: WARNING: serving on 0.0.0.0:{port} with no API keys")


FAKE_PYTHON = """#!/bin/sh
# Stands for python: `-m venv DIR` makes DIR/bin/python (this script); `-m pip install` says
# what it installs unless told to be quiet, as pip does; anything else fails.
if [ "$1" = -m ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
if [ "$1" = -m ] && [ "$2" = pip ]; then
    case " $* " in *" --quiet "*|*" -q "*) exit 0 ;; esac
    echo "Collecting tensorflow"
    exit 0
fi
exit 1
"""


def test_installing_shows_pips_progress(checkout: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    venv = tmp_path / "new-venv"
    result = _run_serve(checkout, venv, {"PYTHON": str(fake), "PORT": str(free_port())})
    assert f"run: installing Python packages into {venv} (about 2 GB" in result.stderr
    assert "Collecting tensorflow" in result.stderr
    assert _install_stamp(venv).is_file()
