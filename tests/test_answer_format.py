"""What every answer looks like on the wire: JSON ending in a newline, readable refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.services import ModelSlot
from app.settings import Settings
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio

BODY = b'{"session_id": "s", "value": 0.1}'


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/predict", {"session_id": "s", "value": 0.1}, 200),
        ("POST", "/predict/batch", {"session_id": "s", "values": [0.1]}, 200),
        ("POST", "/forecast", {"session_id": "nobody", "horizon": 1}, 404),
        ("POST", "/reset", {"session_id": "s"}, 200),
        ("GET", "/sessions/s", None, 404),
        ("DELETE", "/sessions/s", None, 200),
        ("GET", "/health", None, 200),
        ("GET", "/ready", None, 200),
        ("GET", "/model", None, 200),
        ("POST", "/predict", {"session_id": "s"}, 422),
        ("GET", "/nowhere", None, 404),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_json_answers_end_with_a_newline(
    tutorial_models_dir: Path,
    tutorial_model: ModelSlot,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory")
    async with asgi_client(settings, tutorial_model) as client:
        response = await client.request(method, path, json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.content.endswith(b"}\n") and response.content.count(b"\n") == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}],
    ids=["no-content-type", "form", "text"],
)
async def test_a_json_body_without_the_json_content_type_is_told_to_send_it(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, headers: dict[str, str]
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory")
    async with asgi_client(settings, tutorial_model) as client:
        response = await client.post("/predict", content=BODY, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "the body was not read as JSON: send it with the header 'Content-Type: application/json'"
    )


async def test_a_whole_interval_level_is_written_as_an_integer_in_every_answer(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    """80, not 80.0 in some answers and 80 in others: a client keys its intervals by level."""
    settings = Settings(model_dir=tutorial_models_dir, store="memory")
    async with asgi_client(settings, tutorial_model) as client:
        predicted = await client.post("/predict", json={"session_id": "s", "value": 0.1})
        batch = await client.post("/predict/batch", json={"session_id": "s", "values": [0.2]})
        ahead = await client.post("/forecast", json={"session_id": "s", "horizon": 2})
        history = await client.get("/sessions/s/history")
    levels = [
        *(i["level"] for i in predicted.json()["intervals"]),
        *(i["level"] for step in batch.json()["intervals"] for i in step),
        *(i["level"] for step in ahead.json()["intervals"] for i in step),
        *(i["level"] for i in history.json()["next"]["intervals"]),
    ]
    assert levels and all(type(level) is int for level in levels), levels
