"""Shared fixtures: trained artifacts made once per test session, in temporary folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from forecast_core.quiet_tensorflow import quiet_tensorflow

if TYPE_CHECKING:
    from app.forecaster import Forecaster
    from app.intervals import IntervalPolicy
    from app.services import ModelSlot
    from bench.local import RedisCluster, RedisServer
    from forecast_core.artifact import Artifact
    from forecast_core.calibration import Calibration

quiet_tensorflow()

DATA_DIR = Path(__file__).parent / "data"
NILE_CSV = DATA_DIR / "nile.csv"
TUTORIAL_VALUES = [round(0.1 * i, 1) for i in range(10)]


@pytest.fixture(scope="session", autouse=True)
def in_place_step_compiled() -> None:
    """The memory store's in-place step compiled once, up front: otherwise a test's first
    /predict/many would take the record path while a thread compiles it (app.stores.memory),
    and which path a test exercised would depend on timing."""
    from app.session_rows import compile_step_rows

    compile_step_rows()


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
def tutorial_artifact(tutorial_models_dir: Path) -> Artifact:
    from forecast_core.artifact import load_artifact

    return load_artifact(tutorial_models_dir)


@pytest.fixture(scope="session")
def forecaster(tutorial_artifact: Artifact) -> Forecaster:
    """The default model, rebuilt at batch size 1 and checked against Keras once per session."""
    from app.forecaster import Forecaster

    return Forecaster.from_artifact(tutorial_artifact, tolerance=1e-5)


@pytest.fixture(scope="session")
def tutorial_model(forecaster: Forecaster) -> ModelSlot:
    """The checked default model, ready to hand to ``create_app`` (no Keras check per app)."""
    from app.services import ModelSlot

    return ModelSlot(forecaster)


@pytest.fixture(scope="session")
def calibration() -> Calibration:
    """A calibration as training records it: 40 sorted one-step scores, and 3 horizons (a
    fresh session's scale is 1, so its radii are the scores themselves)."""
    from forecast_core.calibration import Calibration

    one_step = [0.005 * i for i in range(1, 41)]
    return Calibration(
        window="selection",
        start=60,
        length=40,
        initial_scale=1.0,
        scale_smoothing=0.1,
        scores=[one_step, [2 * e for e in one_step[:39]], [3 * e for e in one_step[:38]]],
        value_minimum=0.0,
        value_maximum=1.0,
    )


@pytest.fixture(scope="session")
def policy(calibration: Calibration) -> IntervalPolicy:
    """Intervals at the default levels around that calibration."""
    from app.intervals import IntervalPolicy

    return IntervalPolicy.build(calibration, (80, 95), rate=0.05, window=50)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the test session."""
    from bench.local import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One real Redis Cluster (three masters, three replicas) for the test session."""
    from bench.local import RedisCluster

    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def empty_redis_cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The test session's Redis Cluster with no keys: its per-shard counts start from zero."""
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture(scope="session")
def other_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, different model (another seed), for model-change tests."""
    from training.cli import main

    models = tmp_path_factory.mktemp("other-models")
    assert main(["--out", str(models), "--quiet", "--seed", "2", "--epochs", "300"]) == 0
    return models
