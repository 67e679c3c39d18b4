"""Interval coverage on the validation tails of the forecast-quality benchmark's series.

Each series is trained with default flags (the tail held out, as the benchmark does), then fed
to a session through the API one value at a time; the intervals forecast for the tail's values
are checked against them. Slow (it trains every benchmark series), and still part of the run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from app.settings import Settings
from bench.forecast_quality import SERIES, VALIDATION_FRACTION
from tests.helpers import asgi_client
from training.data import split_length

LEVELS = (80, 95)
Coverage = dict[str, dict[int, float]]


def _train(values: np.ndarray, folder: Path) -> Path:
    from training.cli import main

    data = folder / "series.csv"
    data.write_text("value\n" + "\n".join(repr(float(v)) for v in values) + "\n")
    assert main(["--data", str(data), "--out", str(folder / "models"), "--quiet"]) == 0
    return folder / "models"


async def _tail_coverage(models: Path, values: np.ndarray) -> dict[int, float]:
    tail_start = split_length(len(values), VALIDATION_FRACTION)
    inside = dict.fromkeys(LEVELS, 0)
    async with asgi_client(Settings(model_dir=models, store="memory")) as client:
        previous = None
        for index, value in enumerate(values.tolist()):
            if previous is not None and index >= tail_start:
                for interval in previous:
                    inside[interval["level"]] += interval["lower"] <= value <= interval["upper"]
            body = {"session_id": "tail", "value": value}
            previous = (await client.post("/predict", json=body)).json()["intervals"]
    return {level: count / (len(values) - tail_start) for level, count in inside.items()}


@pytest.fixture(scope="module")
def coverage_by_series(tmp_path_factory: pytest.TempPathFactory) -> Coverage:
    coverage = {}
    for name, load in SERIES.items():
        values = load()
        models = _train(values, tmp_path_factory.mktemp(name))
        coverage[name] = asyncio.run(_tail_coverage(models, values))
    print("coverage on validation tails:", coverage)
    return coverage


# The first test also trains every series (the module's fixture): minutes, not seconds.
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("level", LEVELS)
def test_average_coverage_is_within_5_points_of_nominal(
    coverage_by_series: Coverage, level: int
) -> None:
    average = float(np.mean([by_level[level] for by_level in coverage_by_series.values()]))
    assert abs(average - level / 100) <= 0.05, coverage_by_series


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("level", LEVELS)
def test_no_series_is_more_than_15_points_below_nominal(
    coverage_by_series: Coverage, level: int
) -> None:
    lowest = min(by_level[level] for by_level in coverage_by_series.values())
    assert lowest >= level / 100 - 0.15, coverage_by_series
