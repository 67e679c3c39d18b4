"""The served models, by name, and how a changed artifact replaces one without a restart.

``FORECAST_MODEL_DIR`` holds the models: its own ``latest`` (or the folder itself, when it is one
artifact) is the model ``default``, and each ``<name>/latest`` below it the model ``<name>``
(``python -m training --name <name>`` writes that layout). Each replica looks again every
``FORECAST_MODEL_POLL_S`` seconds and on ``POST /models/reload``: a model whose ``latest`` now
leads to another artifact (or whose files changed in place) is loaded and checked against its
batch-1 Keras copy in a worker thread, then swapped in with one assignment. A request takes
its model once, at its start (:meth:`ModelRegistry.get`), so requests in flight finish on the
model they started with and the next ones get the new one. An artifact that fails its checks
is not served: the model it was to replace keeps serving, and ``refused`` says what and why,
until ``latest`` changes again (rolling back is pointing ``latest`` back).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.errors import ModelCheckFailed, ModelNotFound, ModelNotReady
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.schemas import DEFAULT_MODEL, MODEL_NAME_PATTERN
from app.settings import Settings
from forecast_core.artifact import LATEST_LINK, MANIFEST_FILE, WEIGHTS_FILE, ArtifactError

logger = logging.getLogger("app")

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)

# What identifies the files an artifact was loaded from: its resolved folder and the size and
# modification time of its manifest and weights (an artifact replaced in place shows too).
Fingerprint = tuple[str, int, int, int, int]


@dataclass(frozen=True)
class ModelSlot:
    """A loaded, checked model, or why there is none (then that model is not ready)."""

    forecaster: Forecaster | None
    problem: str | None = None

    def require(self) -> Forecaster:
        """The model; ModelNotReady (503) while none is loaded."""
        if self.forecaster is None:
            raise ModelNotReady(self.problem)
        return self.forecaster


@dataclass(frozen=True)
class Refusal:
    """An artifact that was not served, and why."""

    artifact: str
    reason: str
    at: float


@dataclass(frozen=True)
class ServedModel:
    """One name's model as requests see it; replaced whole, never changed."""

    name: str
    forecaster: Forecaster | None
    intervals: IntervalPolicy
    problem: str | None = None  # why nothing is served (only when forecaster is None)
    artifact: str | None = None  # the folder served
    loaded_at: float | None = None
    refused: Refusal | None = None  # the last artifact refused while this one kept serving
    fingerprint: Fingerprint | None = field(default=None, repr=False)
    refused_fingerprint: Fingerprint | None = field(default=None, repr=False)

    def require(self) -> Forecaster:
        """The model; ModelNotReady (503) while none is loaded."""
        if self.forecaster is None:
            raise ModelNotReady(self.problem)
        return self.forecaster

    @property
    def version(self) -> str | None:
        return self.forecaster.version if self.forecaster is not None else None


@dataclass(frozen=True)
class ModelChange:
    """What one look at the models folder did to one model."""

    name: str
    previous_version: str | None
    version: str | None
    refused: str | None = None  # why the new artifact was not served


def find_models(model_dir: Path) -> dict[str, Path]:
    """Each model name in ``model_dir`` and the path that leads to its artifact."""
    found: dict[str, Path] = {}
    if (model_dir / MANIFEST_FILE).is_file():
        return {DEFAULT_MODEL: model_dir}
    latest = model_dir / LATEST_LINK
    if latest.is_symlink() or latest.exists():
        found[DEFAULT_MODEL] = latest
    try:
        children = sorted(model_dir.iterdir())
    except OSError:
        return found
    for child in children:
        if child.name == LATEST_LINK or not _MODEL_NAME.match(child.name):
            continue
        pointer = child / LATEST_LINK
        if not (pointer.is_symlink() or pointer.exists()):
            continue
        if child.name in found:
            logger.warning(
                "model folder %s ignored: %s already serves the model %r", child, latest, child.name
            )
            continue
        found[child.name] = pointer
    return found


def fingerprint(pointer: Path) -> Fingerprint | None:
    """What ``pointer`` leads to now; None if it leads nowhere readable."""
    try:
        folder = os.path.realpath(pointer)
        manifest = os.stat(os.path.join(folder, MANIFEST_FILE))
        weights = os.stat(os.path.join(folder, WEIGHTS_FILE))
    except OSError:
        return None
    return (folder, manifest.st_mtime_ns, manifest.st_size, weights.st_mtime_ns, weights.st_size)


def load_model_at(path: Path, tolerance: float) -> ModelSlot:
    """Load, rebuild at batch size 1, and check a model; on failure say why in the slot."""
    from forecast_core.artifact import load_artifact
    from forecast_core.quiet_tensorflow import quiet_tensorflow

    quiet_tensorflow()
    try:
        artifact = load_artifact(path)
        forecaster = Forecaster.from_artifact(artifact, tolerance)
    except (ArtifactError, ModelCheckFailed) as error:
        return ModelSlot(forecaster=None, problem=str(error))
    except Exception as error:  # an artifact must never take the replica down
        logger.exception("loading the model at %s failed", path)
        return ModelSlot(forecaster=None, problem=f"{type(error).__name__}: {error}")
    return ModelSlot(forecaster=forecaster)


Loader = Callable[[Path, float], ModelSlot]


class ModelRegistry:
    """The served models by name; :meth:`refresh` looks for changed artifacts and swaps them in."""

    def __init__(
        self,
        settings: Settings,
        loader: Loader = load_model_at,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._loader = loader
        self._clock = clock
        # Replaced whole on every change: a reader never sees a half-made dict.
        self._served: dict[str, ServedModel] = {}
        # One look at the folder at a time (the poller and POST /models/reload).
        self._refreshing = threading.Lock()

    # -- what requests use ---------------------------------------------------------------------

    def get(self, name: str | None) -> ServedModel:
        """The model ``name`` (None: the default) as it is now; ModelNotFound if none."""
        served = self._served.get(name or DEFAULT_MODEL)
        if served is None:
            if not self._served:
                raise ModelNotReady(f"no model in {self._settings.model_dir}; train one first")
            raise ModelNotFound(name or DEFAULT_MODEL, sorted(self._served))
        return served

    def all(self) -> list[ServedModel]:
        """Every model, by name."""
        served = self._served
        return [served[name] for name in sorted(served)]

    def problems(self) -> list[str]:
        """Why the replica is not ready: no model found, or a model with nothing served."""
        served = self._served
        if not served:
            return [f"no model in {self._settings.model_dir}; train one first"]
        return [
            f"model {name!r}: {model.problem}" if name != DEFAULT_MODEL else str(model.problem)
            for name, model in sorted(served.items())
            if model.forecaster is None
        ]

    # -- changing what is served -------------------------------------------------------------

    def install(self, name: str, slot: ModelSlot, pointer: Path | None = None) -> ServedModel:
        """Serve ``slot`` as ``name`` (an already checked model, as tests hand one in)."""
        served = self._served_from(name, slot, pointer, fingerprint(pointer) if pointer else None)
        self._swap(name, served)
        return served

    def refresh(self) -> list[ModelChange]:
        """Look at the models folder once; load, check and swap in what changed. Blocking
        (TensorFlow, the Keras check): run it in a worker thread."""
        with self._refreshing:
            changes = []
            for name, pointer in find_models(self._settings.model_dir).items():
                change = self._refresh_one(name, pointer)
                if change is not None:
                    changes.append(change)
            return changes

    def _refresh_one(self, name: str, pointer: Path) -> ModelChange | None:
        current = self._served.get(name)
        now_at = fingerprint(pointer)
        if current is not None:
            if now_at is not None and now_at == current.fingerprint:
                if current.refused is not None:  # latest was pointed back: nothing is refused
                    self._swap(name, replace(current, refused=None, refused_fingerprint=None))
                return None
            if now_at is not None and now_at == current.refused_fingerprint:
                return None  # refused already; wait for latest to change again
            if now_at is None and current.forecaster is not None:
                return None  # latest leads nowhere for now (being replaced): keep serving
        slot = self._loader(pointer, self._settings.check_tolerance)
        previous = current.version if current is not None else None
        artifact = os.path.realpath(pointer)
        if slot.forecaster is None:
            reason = slot.problem or "not loadable"
            if current is not None and current.forecaster is not None:
                logger.error(
                    "model %r: refused %s, still serving %s: %s",
                    name, artifact, current.version, reason,
                )  # fmt: skip
                refusal = Refusal(artifact=artifact, reason=reason, at=self._clock())
                self._swap(name, replace(current, refused=refusal, refused_fingerprint=now_at))
            else:
                logger.error("model %r not loaded, not ready: %s", name, reason)
                self._swap(name, self._served_from(name, slot, pointer, now_at))
            return ModelChange(name, previous, previous, refused=reason)
        if current is not None and current.version == slot.forecaster.version:
            # The same model again (files touched, or copied elsewhere): nothing to swap.
            self._swap(name, replace(current, fingerprint=now_at, refused=None))
            return None
        self._swap(name, self._served_from(name, slot, pointer, now_at))
        if previous is None:
            logger.info("serving model %r: %s from %s", name, slot.forecaster.version, artifact)
        else:
            logger.info(
                "serving model %r: now %s from %s (was %s)",
                name, slot.forecaster.version, artifact, previous,
            )  # fmt: skip
        return ModelChange(name, previous, slot.forecaster.version)

    def _served_from(
        self, name: str, slot: ModelSlot, pointer: Path | None, at: Fingerprint | None
    ) -> ServedModel:
        forecaster = slot.forecaster
        calibration = forecaster.calibration if forecaster is not None else None
        return ServedModel(
            name=name,
            forecaster=forecaster,
            intervals=IntervalPolicy.for_settings(calibration, self._settings),
            problem=slot.problem if forecaster is None else None,
            artifact=os.path.realpath(pointer) if pointer is not None else None,
            loaded_at=self._clock() if forecaster is not None else None,
            fingerprint=at,
        )

    def _swap(self, name: str, served: ServedModel) -> None:
        self._served = {**self._served, name: served}
