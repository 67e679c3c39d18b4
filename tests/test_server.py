"""A real uvicorn process on a free port, driven over TCP with httpx."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import uvicorn_server


def test_tutorial_walk_through_on_a_real_server(tutorial_models_dir: Path, tmp_path: Path) -> None:
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": "sqlite",
        "FORECAST_DATA_DIR": str(tmp_path / "data"),
    }
    with uvicorn_server(env, tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _round in range(2):
                forecasts = []
                for step, value in enumerate([i / 10 for i in range(9)]):
                    response = client.post(
                        "/predict", json={"session_id": "walk", "value": value, "step": step}
                    )
                    assert response.status_code == 200, response.text
                    forecasts.append(round(response.json()["prediction"], 1))
                assert forecasts == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
                assert client.post("/reset", json={"session_id": "walk"}).json()["step"] == 0
            assert client.get("/openapi.json").json()["paths"]["/predict"]
    assert "serving model" in server.log_text()
