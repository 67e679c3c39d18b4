"""A difference model served through the API: first value persistence, then last + s * diff."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.forecaster import Forecaster
from app.settings import Settings
from forecast_core.artifact import load_artifact
from forecast_core.lstm_step import lstm_step, zero_state
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def difference_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A difference model trained on a short trending series."""
    from training.cli import main

    folder = tmp_path_factory.mktemp("difference")
    values = 5.0 + 0.3 * np.arange(120) + np.random.default_rng(4).normal(0, 0.4, 120)
    data = folder / "series.csv"
    data.write_text("value\n" + "\n".join(repr(float(v)) for v in values) + "\n")
    arguments = ["--data", str(data), "--out", str(folder / "models"), "--quiet"]
    assert main([*arguments, "--transform", "difference"]) == 0
    return folder / "models"


@pytest.fixture(scope="module")
def difference_forecaster(difference_models_dir: Path) -> Forecaster:
    return Forecaster.from_artifact(load_artifact(difference_models_dir), tolerance=1e-5)


async def test_the_first_value_is_its_own_forecast(difference_models_dir: Path) -> None:
    settings = Settings(model_dir=difference_models_dir, store="memory")
    async with asgi_client(settings) as client:
        answer = (await client.post("/predict", json={"session_id": "d", "value": 7.25})).json()
    assert answer["prediction"] == 7.25


async def test_api_sessions_equal_the_session_step(
    difference_models_dir: Path, difference_forecaster: Forecaster
) -> None:
    values = [5.0, 5.4, 5.5, 6.1, 6.0, 6.6]
    async with asgi_client(Settings(model_dir=difference_models_dir, store="memory")) as client:
        answers = [
            (await client.post("/predict", json={"session_id": "d", "value": v})).json()
            for v in values
        ]
    _, expected = difference_forecaster.feed(difference_forecaster.zero_state(), values)
    assert [a["prediction"] for a in answers] == pytest.approx(expected, abs=1e-12)


def test_the_second_forecast_is_the_value_plus_the_shrunk_difference(
    difference_forecaster: Forecaster,
) -> None:
    step = difference_forecaster.step
    shrink = difference_forecaster.manifest.transform["shrink"]
    _, (first, second) = difference_forecaster.feed(step.zero_state(), [5.0, 5.4])
    _, difference = lstm_step(
        step.weights,
        zero_state(step.weights.units),
        5.4 - 5.0,
        step.scaling.minimum,
        step.scaling.span,
    )
    assert first == 5.0
    assert second == pytest.approx(5.4 + shrink * difference, abs=1e-12)


async def test_a_difference_session_forecasts_above_the_training_maximum(
    difference_models_dir: Path,
) -> None:
    """The reason for differences: a trend continues past anything the model trained on."""
    values = (20.0 + 0.3 * np.arange(120, 160)).tolist()  # the trend, beyond the training part
    settings = Settings(model_dir=difference_models_dir, store="memory")
    async with asgi_client(settings) as client:
        batch = await client.post("/predict/batch", json={"session_id": "t", "values": values})
    assert batch.json()["predictions"][-1] > 60.0
