"""Loading refuses missing, corrupt and incompatible artifacts with one clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from forecast_core.artifact import ArtifactError, load_artifact


@pytest.fixture
def artifact_copy(tutorial_models_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "artifact"
    shutil.copytree((tutorial_models_dir / "latest").resolve(), target)
    return target


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_loads_through_latest_and_directly(tutorial_models_dir: Path, artifact_copy: Path) -> None:
    assert load_artifact(tutorial_models_dir).version == load_artifact(artifact_copy).version
    assert load_artifact(artifact_copy).lstm_weights().units == 10


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist; train a model first"):
        load_artifact(tmp_path / "nothing")


def test_empty_models_folder(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="train a model first"):
        load_artifact(tmp_path)


def test_tampered_weights_fail_the_checksum(artifact_copy: Path) -> None:
    weights = artifact_copy / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="fails its checksum.*corrupt or tampered"):
        load_artifact(artifact_copy)


def test_missing_weights(artifact_copy: Path) -> None:
    (artifact_copy / "weights.npz").unlink()
    with pytest.raises(ArtifactError, match="weights file .* is missing"):
        load_artifact(artifact_copy)


def test_manifest_not_json(artifact_copy: Path) -> None:
    (artifact_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not readable JSON"):
        load_artifact(artifact_copy)


def test_future_format_version(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, lambda m: m.update(format_version=99))
    with pytest.raises(ArtifactError, match="format_version 99; this code reads 1, 2"):
        load_artifact(artifact_copy)


def test_manifest_missing_a_field(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, lambda m: m.pop("scaling"))
    with pytest.raises(ArtifactError, match="incompatible"):
        load_artifact(artifact_copy)


def test_units_disagree_with_weights(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, lambda m: m["architecture"].update(units=12))
    with pytest.raises(ArtifactError, match="have 10 units, manifest says 12"):
        load_artifact(artifact_copy)


def test_unknown_activation(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, lambda m: m["architecture"].update(activation="relu"))
    with pytest.raises(ArtifactError, match="cannot serve"):
        load_artifact(artifact_copy)


def test_format_1_manifest_still_loads_as_a_level_model(artifact_copy: Path) -> None:
    def to_format_1(manifest: dict[str, Any]) -> None:
        scaling = manifest["scaling"]
        manifest.update(
            format_version=1,
            scaling={"method": "minmax", "min": scaling["minimum"], "max": scaling["maximum"]},
            metrics={"train": manifest["metrics"]["train"], "validation": None},
        )
        for field in ("transform", "selection", "search"):
            del manifest[field]
        training = manifest["training"]
        for field in ("max_epochs", "patience", "start_state", "window_length"):
            del training[field]
        training.update(layout="parallel_contiguous_streams", samples_trimmed=0)

    expected = load_artifact(artifact_copy).manifest.scaling
    _edit_manifest(artifact_copy, to_format_1)
    manifest = load_artifact(artifact_copy).manifest
    assert manifest.transform == {"kind": "level"}
    assert manifest.scaling == expected
    assert manifest.training.layout == "parallel_contiguous_streams"
    assert load_artifact(artifact_copy).session_step().state_size == 20


def test_unknown_transform_is_incompatible(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, lambda m: m.update(transform={"kind": "log"}))
    with pytest.raises(ArtifactError, match="incompatible"):
        load_artifact(artifact_copy)


def test_shrink_outside_0_1_is_incompatible(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, lambda m: m.update(transform={"kind": "difference", "shrink": 2}))
    with pytest.raises(ArtifactError, match="incompatible"):
        load_artifact(artifact_copy)


def test_a_diverged_candidate_loads_with_no_error_figure(artifact_copy: Path) -> None:
    # JSON has no infinity: the trainer writes a diverged candidate's selection RMSE as null.
    def diverge_last(manifest: dict[str, Any]) -> None:
        manifest["search"][-1]["selection_rmse"] = None

    _edit_manifest(artifact_copy, diverge_last)

    assert load_artifact(artifact_copy).manifest.search[-1].selection_rmse is None
