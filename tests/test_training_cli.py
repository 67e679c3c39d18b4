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
from forecast_core.quiet_tensorflow import QUIET_TENSORFLOW_ENV
from training.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_default_run_writes_a_complete_artifact(tutorial_models_dir: Path) -> None:
    latest = tutorial_models_dir / "latest"
    assert latest.is_symlink()
    manifest = json.loads((latest / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert manifest["architecture"]["units"] == 10
    assert manifest["training"]["batch_size"] == 3 and manifest["training"]["max_epochs"] == 1000
    assert manifest["data"]["source"] == "tutorial"
    assert manifest["selection"]["in_sample"] is True  # ten values: no held-out window
    assert manifest["selection"]["transforms"] == ["level", "difference"]  # too short for KPSS
    assert [c["transform"] for c in manifest["search"]] == ["level"] * 2 + ["difference"] * 2
    assert manifest["transform"]["kind"] in ("level", "difference")
    assert manifest["selection"]["beats_persistence"] is True
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
        env={**os.environ, **QUIET_TENSORFLOW_ENV},
        check=True,
    )
    lines = result.stdout.splitlines()
    assert ">Expected=0.1, Predicted=0.1" in lines
    assert ">Expected=0.9, Predicted=0.9" in lines
    assert any(line.strip().startswith("train: RMSE") and "persistence" in line for line in lines)
    assert any(line.strip().startswith("selection: RMSE") and "skill" in line for line in lines)
    assert lines.count("search (selection-window one-step RMSE, lower is better):") == 1
    assert sum(" lr " in line and "RMSE" in line for line in lines) == 4
    assert sum("<- chosen" in line for line in lines) == 1
    assert lines[-1].startswith("saved artifact")


def test_quiet_prints_nothing_but_the_guard_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One epoch of a level model cannot beat next = last on the tutorial sequence.
    argv = ["--out", str(tmp_path), "--epochs", "1", "--transform", "level", "--quiet"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("WARNING: the chosen model does not beat the persistence forecast")
    assert len(err.splitlines()) == 1
    assert (tmp_path / "latest" / "manifest.json").is_file()


def test_guard_is_printed_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--epochs", "1", "--transform", "level"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "does not beat the persistence forecast" in warnings[0]
    selection = load_artifact(tmp_path).manifest.selection
    assert selection is not None and selection.beats_persistence is False


def test_nile_csv_gets_a_selection_window_and_a_validation_tail(tmp_path: Path) -> None:
    from tests.conftest import NILE_CSV
    from training.data import load_csv_series

    argv = ["--data", str(NILE_CSV), "--column", "volume", "--epochs", "5", "--out", str(tmp_path)]
    assert main([*argv, "--transform", "level", "--learning-rate", "0.01", "--quiet"]) == 0
    manifest = load_artifact(tmp_path).manifest
    assert manifest.data.train_length == 80 and manifest.metrics.validation is not None
    assert manifest.metrics.validation.count == 20
    assert manifest.selection is not None and not manifest.selection.in_sample
    assert (manifest.selection.start, manifest.selection.length) == (64, 16)
    # Scaled on the 64 values the network trains on, not on the window or the tail.
    values = load_csv_series(NILE_CSV, "volume").values
    assert manifest.scaling.minimum == values[:64].min()
    assert manifest.scaling.maximum == values[:64].max()
    assert manifest.transform == {"kind": "level"}


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
        (lambda d: ["--batch-size", "20"], "batch size 20 needs at least 22 values to train on"),
        (lambda d: ["--batch-size", "0"], "--batch-size: must be at least 1"),
        (lambda d: ["--epochs", "ten"], "--epochs"),
        (lambda d: ["--learning-rate", "-1"], "--learning-rate"),
        (lambda d: ["--validation-fraction", "1.5"], "--validation-fraction"),
        (lambda d: ["--column", "volume"], "--column applies only to a CSV"),
        (lambda d: ["--selection-fraction", "1"], "--selection-fraction"),
        (lambda d: ["--patience", "0"], "--patience"),
        (lambda d: ["--transform", "log"], "--transform: invalid choice"),
        (lambda d: ["--learning-rate", "0.01,0.01"], "lists a rate twice"),
        (lambda d: ["--learning-rate", "0.01,x"], "--learning-rate"),
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
        "selection-fraction-1",
        "patience-0",
        "unknown-transform",
        "repeated-rate",
        "rate-not-a-number",
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
    argv = ["--epochs", "120", "--learning-rate", "0.01", "--transform", "level"]
    assert main(["--out", str(tmp_path / "a"), *argv]) == 0
    bar = terminal.getvalue()
    assert "level lr 0.01" in bar and "epoch 50/120" in bar and "epoch 120/120 loss" in bar
    assert bar.endswith("\n")
    quiet_terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet_terminal)
    assert main(["--out", str(tmp_path / "b"), *argv, "--quiet"]) == 0
    assert quiet_terminal.getvalue() == ""


def test_name_writes_a_named_model_beside_the_default(tmp_path: Path) -> None:
    argv = ["--out", str(tmp_path), "--epochs", "10", "--transform", "level", "--quiet"]
    assert main([*argv, "--name", "sensors.v2"]) == 0
    named = tmp_path / "sensors.v2"
    assert (named / "latest").is_symlink()
    assert load_artifact(named).path.parent == named
    assert not (tmp_path / "latest").exists()
    # 'default' is the folder's own latest, the layout a plain run writes.
    assert main([*argv, "--name", "default"]) == 0
    assert (tmp_path / "latest").is_symlink() and not (tmp_path / "default").exists()
    # --if-missing looks at the named model's own latest.
    assert main([*argv, "--name", "sensors.v2", "--if-missing"]) == 0
    assert len([p for p in named.iterdir() if p.name != "latest"]) == 1


@pytest.mark.parametrize("name", ["../up", ".hidden", "a/b", ""])
def test_a_name_that_is_no_folder_name_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--name", name])
    assert exit_info.value.code == 2
    assert "is not a model name" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_latest_lists_versions_and_points_latest_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.latest import main as latest_main

    argv = ["--out", str(tmp_path), "--epochs", "10", "--transform", "level", "--quiet"]
    for seed in ("1", "2"):
        assert main([*argv, "--name", "m", "--seed", seed]) == 0
    named = tmp_path / "m"
    first, second = sorted(p.name for p in named.iterdir() if p.name != "latest")
    assert (named / "latest").resolve().name == second
    capsys.readouterr()
    assert latest_main(["--out", str(tmp_path), "--name", "m"]) == 0
    assert capsys.readouterr().out.splitlines() == [first, f"{second}  <- latest"]
    assert latest_main(["--out", str(tmp_path), "--name", "m", first]) == 0  # roll back
    assert (named / "latest").resolve().name == first
    assert latest_main(["--out", str(tmp_path), "--name", "m", "no-such-version"]) == 2
    assert "holds no version" in capsys.readouterr().err
