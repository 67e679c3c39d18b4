"""Shared fixtures: trained artifacts made once per test session, in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA_DIR = Path(__file__).parent / "data"
NILE_CSV = DATA_DIR / "nile.csv"
TUTORIAL_VALUES = [round(0.1 * i, 1) for i in range(10)]


@pytest.fixture(scope="session")
def tutorial_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the default model (tutorial sequence, default flags)."""
    from training.cli import main

    models = tmp_path_factory.mktemp("models")
    assert main(["--out", str(models), "--quiet"]) == 0
    return models


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tutorial_artifact(tutorial_models_dir: Path):
    from forecast_core.artifact import load_artifact

    return load_artifact(tutorial_models_dir)


@pytest.fixture(scope="session")
def forecaster(tutorial_artifact):
    from app.forecaster import Forecaster

    return Forecaster.from_artifact(tutorial_artifact, tolerance=1e-5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """One real redis-server for the test session."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def other_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, different model (another seed), for model-change tests."""
    from training.cli import main

    models = tmp_path_factory.mktemp("other-models")
    assert main(["--out", str(models), "--quiet", "--seed", "2", "--epochs", "300"]) == 0
    return models
