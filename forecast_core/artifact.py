"""The trained-model artifact: ``<models>/<version>/{manifest.json, weights.npz}`` and ``latest``.

Written to a temporary folder and renamed into place, so a crash never leaves half an artifact.
Loading checks the manifest and the weights checksum and fails with one clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from forecast_core.calibration import Calibration
from forecast_core.lstm_step import WEIGHT_NAMES, LstmWeights
from forecast_core.scaling import MinMaxScaler
from forecast_core.session_step import SessionStep
from forecast_core.transform import Transform

FORMAT_VERSION = 2
# Older formats this code still reads (upgraded in memory, see _upgrade_format_1).
READABLE_FORMAT_VERSIONS = (1, FORMAT_VERSION)
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.npz"
LATEST_LINK = "latest"
# A models folder's own 'latest' is the model named DEFAULT_MODEL; '<name>/latest' the model
# <name>, a name that cannot be a hidden, staging or relative folder.
DEFAULT_MODEL = "default"
# The evaluation figure the training job saves beside the manifest (served by /models/{name}).
EVALUATION_PLOT = "evaluation.png"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ArtifactError(Exception):
    """A missing, corrupt or incompatible artifact; the message says which and where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    kind: str = "stateful_lstm"
    units: int = Field(ge=1)
    activation: str = "tanh"
    input_shape: list[int] = [1, 1]
    outputs: int = 1


class TrainingInfo(_Strict):
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=0)  # epochs of the weights kept (the best on the selection window)
    max_epochs: int | None = None
    patience: int | None = None
    learning_rate: float = Field(gt=0)
    optimizer: str = "adam"
    seed: int
    layout: str = "random_windows"
    start_state: str = "uniform(-1, 1)"
    window_length: int | None = None
    samples_used: int
    final_loss: float
    seconds: float


class Scaling(_Strict):
    """What the network sees (values for a level model, differences for a difference model)."""

    method: str = "minmax"
    minimum: float
    maximum: float


class DataInfo(_Strict):
    source: str
    column: str | None
    sha256: str
    length: int
    train_length: int
    validation_fraction: float


class ErrorMetrics(_Strict):
    count: int
    rmse: float
    mae: float
    persistence_rmse: float
    persistence_mae: float
    skill: float | None = None  # 1 - rmse / persistence_rmse; None when persistence is exact


class Metrics(_Strict):
    train: ErrorMetrics | None
    selection: ErrorMetrics | None = None
    validation: ErrorMetrics | None


class Candidate(_Strict):
    """One configuration of the search and its score on the selection window."""

    transform: str
    learning_rate: float
    epochs: int  # the best epoch, whose weights were kept
    epochs_run: int
    shrink: float | None
    # None: the candidate diverged (no finite error; JSON has no infinity, and pydantic writes
    # one as null, which a float field would refuse when the manifest is read back).
    selection_rmse: float | None
    seconds: float


class Stationarity(_Strict):
    """The KPSS test (level stationarity) on the training part."""

    statistic: float
    p_value: float
    lags: int
    stationary: bool  # p >= 0.05


class SelectionInfo(_Strict):
    fraction: float
    start: int  # index of the first value the window scores
    length: int  # forecasts scored
    in_sample: bool  # series too short for a held-out window: scored on the training part
    kpss: Stationarity | None  # None when the training part is too short for the test
    transforms: list[str]  # the transforms allowed to compete
    beats_persistence: bool


class WeightsInfo(_Strict):
    file: str = WEIGHTS_FILE
    sha256: str
    names: list[str]
    shapes: list[list[int]]


class Manifest(_Strict):
    format_version: int
    version: str
    created_at: str
    architecture: Architecture
    training: TrainingInfo
    transform: dict[str, Any]
    scaling: Scaling
    selection: SelectionInfo | None = None  # None in format-1 artifacts
    # Split-conformal residuals for intervals; None in artifacts written before them.
    calibration: Calibration | None = None
    search: list[Candidate] = []
    data: DataInfo
    metrics: Metrics
    software: dict[str, str]
    weights: WeightsInfo

    @field_validator("transform")
    @classmethod
    def _known_transform(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return Transform.from_dict(value).to_dict()
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"transform {value} is not one this code serves: {error}") from None

    def scaler(self) -> MinMaxScaler:
        """The scaling of what the network sees."""
        if self.scaling.method != "minmax":
            raise ValueError(f"unsupported scaling method {self.scaling.method!r}")
        return MinMaxScaler(self.scaling.minimum, self.scaling.maximum)

    def transform_spec(self) -> Transform:
        return Transform.from_dict(self.transform)


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact."""

    path: Path
    manifest: Manifest
    weights: list[npt.NDArray[np.float32]]

    @property
    def version(self) -> str:
        return self.manifest.version

    def lstm_weights(self) -> LstmWeights:
        return LstmWeights.from_list(list(self.weights))

    def session_step(self) -> SessionStep:
        """The serving step (both transforms) for this artifact."""
        manifest = self.manifest
        return SessionStep(self.lstm_weights(), manifest.transform_spec(), manifest.scaler())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_artifact(
    models_dir: Path,
    weights: list[npt.NDArray[np.float32]],
    build_manifest: Callable[[WeightsInfo], Manifest],
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write weights, manifest and extras into a temp folder, rename it into place, update latest.

    The manifest is built once the weights' checksum is known, so a version may embed it.
    """
    if len(weights) != len(WEIGHT_NAMES):
        raise ValueError(f"expected {len(WEIGHT_NAMES)} weight arrays, got {len(weights)}")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-artifact-", dir=models_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    try:
        weights_path = staging / WEIGHTS_FILE
        with weights_path.open("wb") as handle:
            arrays: dict[str, Any] = dict(zip(WEIGHT_NAMES, weights, strict=True))
            np.savez(handle, **arrays)
        info = WeightsInfo(
            sha256=sha256_file(weights_path),
            names=list(WEIGHT_NAMES),
            shapes=[list(w.shape) for w in weights],
        )
        manifest = build_manifest(info)
        final_dir = models_dir / manifest.version
        if final_dir.exists():
            raise FileExistsError(f"artifact {final_dir} already exists")
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        if extra_files is not None:
            extra_files(staging)
        _fsync_tree(staging)
        os.rename(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    point_latest_at(models_dir, manifest.version)
    return final_dir


def _fsync_tree(folder: Path) -> None:
    # The rename is only crash-safe if the files it publishes are on disk first.
    for child in folder.iterdir():
        with child.open("rb") as handle:
            os.fsync(handle.fileno())
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def point_latest_at(models_dir: Path, version: str) -> None:
    # A symlink swapped in with rename: readers see the old or the new target, never neither.
    temporary = models_dir / f".{LATEST_LINK}.{os.getpid()}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    temporary.symlink_to(version)
    os.replace(temporary, models_dir / LATEST_LINK)


def resolve_artifact_dir(path: Path) -> Path:
    """Accept an artifact folder itself or a models folder holding ``latest``."""
    if (path / MANIFEST_FILE).is_file():
        return path
    latest = path / LATEST_LINK
    if latest.exists():
        return latest.resolve()
    if not path.exists():
        raise ArtifactError(f"model folder {path} does not exist; train a model first")
    raise ArtifactError(
        f"{path} holds neither {MANIFEST_FILE} nor a '{LATEST_LINK}' artifact; train a model first"
    )


def _upgrade_format_1(raw: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest in format 2's shape: a level model, scaling as minimum/maximum."""
    upgraded = dict(raw)
    scaling = raw.get("scaling")
    if isinstance(scaling, dict) and {"min", "max"} <= scaling.keys():
        upgraded["scaling"] = {
            "method": scaling.get("method", "minmax"),
            "minimum": scaling["min"],
            "maximum": scaling["max"],
        }
    upgraded["transform"] = Transform.level().to_dict()
    training = raw.get("training")
    if isinstance(training, dict):
        kept = {k: v for k, v in training.items() if k != "samples_trimmed"}
        upgraded["training"] = {
            **kept,
            "max_epochs": training.get("epochs"),
            "layout": training.get("layout", "parallel_contiguous_streams"),
            "start_state": "zeros",
        }
    return upgraded


def load_artifact(path: Path) -> Artifact:
    """Load and verify an artifact (folder or models folder); raise ArtifactError if unusable."""
    folder = resolve_artifact_dir(path)
    manifest_path = folder / MANIFEST_FILE
    try:
        raw = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{manifest_path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{manifest_path} is not readable JSON: {error}") from None
    found = raw.get("format_version") if isinstance(raw, dict) else None
    if found not in READABLE_FORMAT_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_FORMAT_VERSIONS)
        raise ArtifactError(
            f"{manifest_path} has format_version {found!r}; this code reads {readable}"
        )
    try:
        manifest = Manifest.model_validate(_upgrade_format_1(raw) if found == 1 else raw)
        manifest.scaler()
    except (ValidationError, ValueError) as error:
        first = str(error).splitlines()
        raise ArtifactError(f"{manifest_path} is incompatible: {' '.join(first[:3])}") from None
    if manifest.architecture.kind != "stateful_lstm" or manifest.architecture.activation != "tanh":
        raise ArtifactError(f"{manifest_path} describes an architecture this code cannot serve")
    weights_path = folder / manifest.weights.file
    if not weights_path.is_file():
        raise ArtifactError(f"weights file {weights_path} is missing")
    actual = sha256_file(weights_path)
    if actual != manifest.weights.sha256:
        raise ArtifactError(
            f"weights file {weights_path} fails its checksum (sha256 {actual[:12]}..., manifest "
            f"says {manifest.weights.sha256[:12]}...): corrupt or tampered"
        )
    try:
        with np.load(weights_path, allow_pickle=False) as archive:
            weights = [np.asarray(archive[name], dtype=np.float32) for name in WEIGHT_NAMES]
        LstmWeights.from_list(list(weights))
    except (OSError, KeyError, ValueError) as error:
        raise ArtifactError(f"weights file {weights_path} is unusable: {error}") from None
    if weights[1].shape[0] != manifest.architecture.units:
        raise ArtifactError(
            f"weights in {weights_path} have {weights[1].shape[0]} units, "
            f"manifest says {manifest.architecture.units}"
        )
    return Artifact(path=folder, manifest=manifest, weights=weights)
