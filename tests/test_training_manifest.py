"""What the training job writes of its search into the artifact's manifest."""

from __future__ import annotations

import math

import numpy as np

from forecast_core.artifact import Candidate
from forecast_core.scaling import MinMaxScaler
from forecast_core.transform import Transform, TransformKind
from training.manifest import _candidate
from training.search import CandidateResult


def _result(selection_rmse: float) -> CandidateResult:
    return CandidateResult(
        transform=Transform(TransformKind.LEVEL),
        learning_rate=0.01,
        scaler=MinMaxScaler(0.0, 1.0),
        weights=[],
        best_epoch=3,
        epochs_run=5,
        selection_rmse=selection_rmse,
        losses=np.ones(5),
        best_loss=1.0,
        window_length=3,
        samples_used=9,
        seconds=0.5,
    )


def test_a_diverged_candidate_is_written_without_an_error_figure() -> None:
    written = _candidate(_result(math.inf)).model_dump_json()

    assert Candidate.model_validate_json(written).selection_rmse is None


def test_a_candidate_keeps_its_selection_error() -> None:
    written = _candidate(_result(0.25)).model_dump_json()

    assert Candidate.model_validate_json(written).selection_rmse == 0.25
