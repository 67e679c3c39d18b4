"""The default job end to end on the tutorial sequence and on Nile (slow: full default jobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecast_core.artifact import load_artifact
from tests.conftest import NILE_CSV, TUTORIAL_VALUES
from training.cli import main
from training.data import tutorial_series


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 11), ids=lambda seed: f"seed{seed}")
def test_default_job_forecasts_the_tutorial_sequence(tmp_path: Path, seed: int) -> None:
    assert main(["--out", str(tmp_path), "--quiet", "--seed", str(seed)]) == 0
    step = load_artifact(tmp_path).session_step()
    forecasts = step.one_step_forecasts(tutorial_series().values)
    assert [round(f, 1) for f in forecasts] == TUTORIAL_VALUES[1:]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3], ids=lambda seed: f"seed{seed}")
def test_default_job_beats_persistence_on_the_nile_validation_tail(
    tmp_path: Path, seed: int
) -> None:
    argv = ["--data", str(NILE_CSV), "--out", str(tmp_path), "--quiet", "--seed", str(seed)]
    assert main(argv) == 0
    metrics = load_artifact(tmp_path).manifest.metrics
    assert metrics.validation is not None and metrics.validation.count == 20
    assert metrics.validation.rmse < metrics.validation.persistence_rmse
