"""Intervals, flags and live skill through the API, from a model trained with default flags."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.services import ModelSlot
from app.settings import Settings
from bench.local import RedisServer
from forecast_core.arrays import FloatArray
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio

# A noisy seasonal series: stationary, so the level model may win; 300 values train quickly.
SEASONAL_LENGTH = 300


def seasonal_series(length: int, seed: int = 3) -> FloatArray:
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    return 20.0 + 3.0 * np.sin(2 * np.pi * t / 12) + rng.normal(0.0, 0.5, length)


@pytest.fixture(scope="session")
def seasonal_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained with default flags on the seasonal series."""
    from training.cli import main

    folder = tmp_path_factory.mktemp("seasonal")
    data = folder / "series.csv"
    values = seasonal_series(SEASONAL_LENGTH)
    data.write_text("value\n" + "\n".join(repr(float(v)) for v in values) + "\n")
    assert main(["--data", str(data), "--out", str(folder / "models"), "--quiet"]) == 0
    return folder / "models"


def _settings(models: Path, **extra: object) -> Settings:
    return Settings.model_validate({"model_dir": models, "store": "memory", **extra})


async def _feed_one_at_a_time(
    client: httpx.AsyncClient, session_id: str, values: FloatArray
) -> list[dict[str, object]]:
    answers = []
    for value in values.tolist():
        response = await client.post("/predict", json={"session_id": session_id, "value": value})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def _coverage(answers: list[dict[str, object]], values: FloatArray, level: int) -> float:
    """Share of values[1:] inside the interval at ``level`` forecast for them."""
    inside: list[bool] = []
    for answer, actual in zip(answers[:-1], values[1:].tolist(), strict=True):
        intervals = answer["intervals"]
        assert isinstance(intervals, list)
        (interval,) = [i for i in intervals if i["level"] == level]
        inside.append(bool(interval["lower"] <= actual <= interval["upper"]))
    return sum(inside) / len(inside)


async def test_every_prediction_carries_the_configured_intervals(
    seasonal_models_dir: Path,
) -> None:
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        answer = (await client.post("/predict", json={"session_id": "a", "value": 20.0})).json()
    assert [i["level"] for i in answer["intervals"]] == [80, 95]
    lower80, lower95 = (i["lower"] for i in answer["intervals"])
    upper80, upper95 = (i["upper"] for i in answer["intervals"])
    assert lower95 < lower80 < answer["prediction"] < upper80 < upper95


async def test_a_request_may_ask_for_its_own_levels(seasonal_models_dir: Path) -> None:
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        body = {"session_id": "a", "value": 20.0, "levels": [50, 99]}
        answer = (await client.post("/predict", json=body)).json()
    assert [i["level"] for i in answer["intervals"]] == [50, 99]


@pytest.mark.parametrize(
    ("levels", "fragment"),
    [([0], "greater than 0"), ([100], "less than 100"), ([10, 20, 30, 40, 50, 60], "at most 5")],
    ids=["zero", "hundred", "too-many"],
)
async def test_bad_levels_get_422(
    seasonal_models_dir: Path, levels: list[int], fragment: str
) -> None:
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        response = await client.post(
            "/predict", json={"session_id": "a", "value": 20.0, "levels": levels}
        )
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"]


async def test_batch_answers_one_interval_list_per_prediction(seasonal_models_dir: Path) -> None:
    values = seasonal_series(20).tolist()
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        batch = (
            await client.post("/predict/batch", json={"session_id": "b", "values": values})
        ).json()
        singles = await _feed_one_at_a_time(client, "s", np.asarray(values))
    assert batch["intervals"] == [single["intervals"] for single in singles]
    assert batch["flags"] == [single["flags"] for single in singles]


async def test_a_replay_answers_the_same_intervals(seasonal_models_dir: Path) -> None:
    values = seasonal_series(5).tolist()
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        await client.post("/predict/batch", json={"session_id": "r", "values": values[:4]})
        body = {"session_id": "r", "value": values[4], "step": 4}
        first = (await client.post("/predict", json=body)).json()
        again = (await client.post("/predict", json=body)).json()
    assert again["replayed"] is True
    assert again["intervals"] == first["intervals"] and again["flags"] == first["flags"]


async def test_forecast_intervals_widen_with_the_horizon(seasonal_models_dir: Path) -> None:
    values = seasonal_series(30).tolist()
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        await client.post("/predict/batch", json={"session_id": "f", "values": values})
        ahead = (await client.post("/forecast", json={"session_id": "f", "horizon": 30})).json()
    widths = [step[1]["upper"] - step[1]["lower"] for step in ahead["intervals"]]
    assert len(widths) == 30
    assert widths[-1] > widths[0]


async def test_a_value_far_outside_the_training_range_is_flagged(
    seasonal_models_dir: Path,
) -> None:
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        await client.post("/predict", json={"session_id": "x", "value": 20.0})
        answer = (await client.post("/predict", json={"session_id": "x", "value": 500.0})).json()
        metrics = (await client.get("/metrics")).text
    assert answer["flags"] == ["outside_training_range", "outside_interval_95"]
    assert 'forecast_flags_total{flag="outside_training_range"} 1.0' in metrics
    assert 'forecast_interval_outcomes_total{level="95",outcome="miss"} 1.0' in metrics


async def test_session_info_shows_live_skill(seasonal_models_dir: Path) -> None:
    values = seasonal_series(40, seed=11)
    async with asgi_client(_settings(seasonal_models_dir, skill_window=10)) as client:
        await client.post("/predict/batch", json={"session_id": "k", "values": values.tolist()})
        skill = (await client.get("/sessions/k")).json()["skill"]
    assert skill["life"]["count"] == 39 and skill["recent"]["count"] == 10
    assert skill["life"]["persistence_rmse"] == pytest.approx(
        float(np.sqrt(np.mean(np.diff(values) ** 2)))
    )
    assert [c["level"] for c in skill["life"]["coverage"]] == [80, 95]


async def test_coverage_recovers_after_a_level_shift(seasonal_models_dir: Path) -> None:
    """The 80 % interval holds at least 70 % over steps 100-300 after the series jumps."""
    values = seasonal_series(SEASONAL_LENGTH + 300, seed=5)
    values[SEASONAL_LENGTH:] += 8.0  # far past the training range
    async with asgi_client(_settings(seasonal_models_dir)) as client:
        answers = await _feed_one_at_a_time(client, "shift", values)
    start = SEASONAL_LENGTH + 100
    window = slice(start - 1, SEASONAL_LENGTH + 300)
    assert _coverage(answers[window], values[window], 80) >= 0.70


async def test_two_replicas_sharing_redis_give_identical_intervals(
    seasonal_models_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    values = seasonal_series(60, seed=9).tolist()
    settings = _settings(
        seasonal_models_dir,
        store="redis",
        redis_url=redis_server.url,
        redis_prefix=f"replicas-{tmp_path.name}",
    )
    async with asgi_client(settings) as first, asgi_client(settings) as second:
        alternating = []
        for index, value in enumerate(values):
            replica = first if index % 2 == 0 else second
            body = {"session_id": "alternating", "value": value}
            alternating.append((await replica.post("/predict", json=body)).json())
        single = await _feed_one_at_a_time(second, "single", np.asarray(values))
    assert [a["intervals"] for a in alternating] == [s["intervals"] for s in single]
    assert all(math.isfinite(i["upper"]) for a in alternating for i in a["intervals"])


@pytest.mark.anyio
async def test_skill_of_huge_values_stays_a_number(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    # Squared errors of values near 1e200 overflow; JSON has no infinity (it would be null).
    settings = Settings(model_dir=tutorial_models_dir, store="memory")
    async with asgi_client(settings, tutorial_model) as client:
        values = [1e200, -1e200, 1e200, -1e200]
        await client.post("/predict/batch", json={"session_id": "huge", "values": values})
        skill = (await client.get("/sessions/huge")).json()["skill"]
    for figures in (skill["life"], skill["recent"]):
        assert all(math.isfinite(figures[name]) for name in ("mae", "rmse", "persistence_rmse"))
        assert figures["skill"] is None  # infinity over infinity: no figure
