"""SIGTERM: requests in flight finish, new ones are refused, nothing acknowledged is lost."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import (
    sqlite_server_env,
    start_uvicorn,
    stop,
    uvicorn_server,
    wait_until_ready,
)


def test_sigterm_finishes_in_flight_requests_and_keeps_every_acknowledged_step(
    tutorial_models_dir: Path, tmp_path: Path
) -> None:
    env = sqlite_server_env(tutorial_models_dir, tmp_path)
    server = start_uvicorn(env, tmp_path / "server.log")
    wait_until_ready(server)
    acknowledged: dict[str, int] = {}
    outcomes: list[str] = []
    lock = threading.Lock()
    values = [0.5] * 1000  # a batch long enough to be in flight when the signal lands

    def client(session: str) -> None:
        step = 0
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            while True:
                try:
                    response = http.post(
                        "/predict/batch",
                        json={"session_id": session, "values": values, "step": step},
                    )
                except httpx.TransportError as error:
                    with lock:
                        outcomes.append(type(error).__name__)
                    return
                with lock:
                    outcomes.append(str(response.status_code))
                if response.status_code != 200:
                    return
                step = response.json()["step"]
                with lock:
                    acknowledged[session] = step

    threads = [threading.Thread(target=client, args=(f"s{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    for thread in threads:
        thread.join(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal, so the exit status is -SIGTERM.
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    log = server.log_text()
    assert "Waiting for application shutdown" in log and "Application shutdown complete" in log
    # No request failed inside the service: each got its answer or was refused at the door.
    assert all(o == "200" or o.endswith("Error") for o in outcomes), set(outcomes)
    assert outcomes.count("200") > 6
    assert time.monotonic() - signalled < 30
    # A fresh connection is refused once the server is gone.
    try:
        httpx.get(f"{server.base_url}/health", timeout=2)
        raise AssertionError("the server still answers after SIGTERM")
    except httpx.ConnectError:
        pass

    with uvicorn_server(env, tmp_path / "server2.log") as restarted:
        for session, step in acknowledged.items():
            info = httpx.get(f"{restarted.base_url}/sessions/{session}").json()
            assert info["step"] == step, (session, info, step)
    stop(server)
