"""README's first set-up command: `./run serve` trains a model when none exists, then serves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from bench.local import free_port
from tests.helpers import REPO, Server, stop, wait_until_ready


def test_run_serve_trains_then_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "FORECAST_MODEL_DIR": str(tmp_path / "models"),
        "FORECAST_DATA_DIR": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(REPO / "run"), "serve"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_ready(server, timeout=300)
        assert (tmp_path / "models" / "latest" / "manifest.json").is_file()
        assert "training on tutorial" in server.log_text()
        response = httpx.post(
            f"{server.base_url}/predict", json={"session_id": "readme", "value": 0.0}
        )
        assert response.status_code == 200 and round(response.json()["prediction"], 1) == 0.1
        assert (tmp_path / "data" / "sessions.sqlite3").is_file()  # the default store
    finally:
        stop(server)
