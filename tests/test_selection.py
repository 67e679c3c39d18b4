"""Choices made on the selection window only, and models that stay stable in long sessions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forecast_core.artifact import load_artifact
from forecast_core.lstm_step import LstmWeights
from forecast_core.session_step import SessionStep
from forecast_core.transform import Transform, TransformKind
from training.cli import main
from training.data import network_series, window_length
from training.trainer import train_compiled


def _csv(path: Path, values: np.ndarray) -> str:
    path.write_text("value\n" + "\n".join(repr(float(v)) for v in values) + "\n")
    return str(path)


def _train(tmp_path: Path, name: str, values: np.ndarray, *flags: str) -> dict[str, Any]:
    out = tmp_path / name
    argv = ["--data", _csv(tmp_path / f"{name}.csv", values), "--out", str(out), "--quiet"]
    assert main([*argv, *flags]) == 0
    manifest: dict[str, Any] = json.loads((out / "latest" / "manifest.json").read_text())
    return manifest


def _choices(search: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in candidate.items() if k != "seconds"} for candidate in search]


def test_validation_tail_changes_no_choice(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    values = 20.0 + np.cumsum(rng.normal(0, 1, 150))
    changed = values.copy()
    changed[120:] = rng.normal(100.0, 30.0, 30)  # the validation tail (20 %) only
    flags = ("--epochs", "20", "--learning-rate", "0.01,0.003", "--transform", "difference")
    first = _train(tmp_path, "first", values, *flags)
    second = _train(tmp_path, "second", changed, *flags)
    assert first["data"]["train_length"] == 120
    for field in ("transform", "scaling", "selection", "weights"):
        assert first[field] == second[field], field
    assert _choices(first["search"]) == _choices(second["search"])
    assert first["training"]["learning_rate"] == second["training"]["learning_rate"]
    assert first["metrics"]["selection"] == second["metrics"]["selection"]
    assert first["metrics"]["validation"] != second["metrics"]["validation"]


def test_auto_picks_difference_on_a_trending_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = 0.2 * np.arange(200) + rng.normal(0, 1, 200)
    manifest = _train(tmp_path, "trend", values, "--epochs", "10", "--learning-rate", "0.01")
    assert manifest["selection"]["kpss"]["stationary"] is False
    assert manifest["selection"]["transforms"] == ["difference"]
    assert manifest["transform"]["kind"] == "difference"
    assert load_artifact(tmp_path / "trend").session_step().transform.is_difference


def test_auto_picks_level_on_a_stationary_series(tmp_path: Path) -> None:
    values = 10.0 + np.random.default_rng(2).normal(0, 1, 200)
    manifest = _train(tmp_path, "noise", values, "--epochs", "60", "--learning-rate", "0.01")
    assert manifest["selection"]["kpss"]["stationary"] is True
    assert manifest["selection"]["transforms"] == ["level", "difference"]
    assert manifest["transform"] == {"kind": "level"}
    assert manifest["selection"]["beats_persistence"] is True


def _seasonal(length: int, seed: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0, 0.3, length)
    return 10.0 + 2.0 * np.sin(2 * np.pi * t / 12) + noise


@pytest.mark.parametrize("kind", list(TransformKind), ids=lambda kind: kind.value)
def test_a_session_many_times_longer_than_a_training_stream_stays_accurate(
    kind: TransformKind,
) -> None:
    # No early stopping here: 400 epochs at 0.01 is long enough for the tutorial's layout
    # (fixed streams from zero state) to drift far off in such a session.
    series = network_series(_seasonal(240, seed=3), kind)
    result = train_compiled(series, batch_size=3, units=10, epochs=400, learning_rate=0.01, seed=1)
    step = SessionStep(LstmWeights.from_list(result.weights), Transform(kind), series.scaler)
    stream = window_length(len(series.inputs), 3)
    session = _seasonal(8 * 240, seed=4)  # about 24 training streams long
    errors = step.one_step_forecasts(session) - session[1:]
    first = float(np.sqrt(np.mean(errors[:stream] ** 2)))
    last = float(np.sqrt(np.mean(errors[-stream:] ** 2)))
    assert last <= 1.5 * first
