"""The training command end to end: artifact, output, and refusal of bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forecast_core.artifact import load_artifact, sha256_file
from training.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_default_run_writes_a_complete_artifact(tutorial_models_dir: Path) -> None:
    latest = tutorial_models_dir / "latest"
    assert latest.is_symlink()
    manifest = json.loads((latest / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["architecture"]["units"] == 10
    assert manifest["training"]["batch_size"] == 3 and manifest["training"]["epochs"] == 1000
    assert manifest["data"]["source"] == "tutorial"
    assert manifest["weights"]["sha256"] == sha256_file(latest / "weights.npz")
    assert manifest["metrics"]["train"]["rmse"] < manifest["metrics"]["train"]["persistence_rmse"]
    assert (latest / "evaluation.png").read_bytes().startswith(b"\x89PNG")
    assert load_artifact(tutorial_models_dir).version == manifest["version"]
    # Nothing half-written is left behind.
    assert [p.name for p in tutorial_models_dir.iterdir() if p.name.startswith(".")] == []


def test_prints_the_tutorial_table_and_scores(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "--out", str(tmp_path), "--epochs", "1000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
    )
    lines = result.stdout.splitlines()
    assert ">Expected=0.1, Predicted=0.1" in lines
    assert ">Expected=0.9, Predicted=0.9" in lines
    assert any(line.strip().startswith("train: RMSE") and "persistence" in line for line in lines)
    assert lines[-1].startswith("saved artifact")


def test_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--epochs", "3", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "latest" / "manifest.json").is_file()


def test_nile_csv_gets_a_validation_split(tmp_path: Path) -> None:
    from tests.conftest import NILE_CSV

    argv = ["--data", str(NILE_CSV), "--column", "volume", "--epochs", "5", "--out", str(tmp_path)]
    assert main([*argv, "--quiet"]) == 0
    manifest = load_artifact(tmp_path).manifest
    assert manifest.data.train_length == 80 and manifest.metrics.validation is not None
    assert manifest.training.samples_trimmed == 1
    assert manifest.scaling.min == 456.0  # the training part's minimum


def _bad_csv(tmp_path: Path, content: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize(
    ("make_argv", "message"),
    [
        (lambda d: ["--data", str(d / "missing.csv")], "does not exist"),
        (lambda d: ["--data", _bad_csv(d, "")], "is empty"),
        (lambda d: ["--data", _bad_csv(d, "v\n1\n2\n3\n4\n5\n"), "--column", "w"], "column 'w'"),
        (lambda d: ["--data", _bad_csv(d, "v\n1\n2\nabc\n")], "not a number"),
        (lambda d: ["--data", _bad_csv(d, "v\n1\n2\nNaN\n")], "'NaN'"),
        (lambda d: ["--data", _bad_csv(d, "v\n1\n2\ninf\n")], "'inf'"),
        (lambda d: ["--batch-size", "20"], "batch size 20 needs at least 21 values"),
        (lambda d: ["--batch-size", "0"], "--batch-size: must be at least 1"),
        (lambda d: ["--epochs", "ten"], "--epochs"),
        (lambda d: ["--learning-rate", "-1"], "--learning-rate"),
        (lambda d: ["--validation-fraction", "1.5"], "--validation-fraction"),
        (lambda d: ["--column", "volume"], "--column applies only to a CSV"),
    ],
    ids=[
        "missing-csv",
        "empty-csv",
        "unknown-column",
        "non-numeric",
        "nan",
        "infinite",
        "too-short",
        "batch-below-1",
        "epochs-not-a-number",
        "negative-learning-rate",
        "bad-fraction",
        "column-without-csv",
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_argv, message: str
) -> None:
    out = tmp_path / "models"
    with pytest.raises(SystemExit) as exited:
        sys.exit(main([*make_argv(tmp_path), "--out", str(out)]))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert message in captured.err
    assert not out.exists()


def test_if_missing_leaves_an_existing_model_alone(
    tutorial_models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in tutorial_models_dir.iterdir())
    assert main(["--out", str(tutorial_models_dir), "--if-missing"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert sorted(p.name for p in tutorial_models_dir.iterdir()) == before


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["--out", str(tmp_path / "a"), "--epochs", "120"]) == 0
    bar = terminal.getvalue()
    assert "epoch 50/120" in bar and "epoch 120/120 loss" in bar and bar.endswith("\n")
    quiet_terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet_terminal)
    assert main(["--out", str(tmp_path / "b"), "--epochs", "120", "--quiet"]) == 0
    assert quiet_terminal.getvalue() == ""
