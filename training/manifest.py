"""The manifest of a trained artifact: what was chosen, on what evidence, and how well it does."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from forecast_core.artifact import (
    FORMAT_VERSION,
    Architecture,
    Candidate,
    DataInfo,
    Manifest,
    Scaling,
    SelectionInfo,
    Stationarity,
    TrainingInfo,
    WeightsInfo,
)
from forecast_core.calibration import Calibration
from forecast_core.transform import TransformKind
from training.data import Series, Split
from training.evaluate import Evaluation
from training.search import KPSS_LEVEL, CandidateResult, SearchSettings
from training.stationarity import KpssResult


@dataclass(frozen=True)
class JobRecord:
    """Everything one training run decided and measured."""

    series: Series
    split: Split
    validation_fraction: float
    selection_fraction: float
    kpss: KpssResult | None
    kinds: tuple[TransformKind, ...]
    settings: SearchSettings
    results: Sequence[CandidateResult]
    chosen: CandidateResult
    evaluation: Evaluation
    beats_persistence: bool
    seconds: float
    calibration: Calibration


def _stationarity(kpss: KpssResult | None) -> Stationarity | None:
    if kpss is None:
        return None
    return Stationarity(
        statistic=kpss.statistic,
        p_value=kpss.p_value,
        lags=kpss.lags,
        stationary=kpss.p_value >= KPSS_LEVEL,
    )


def _candidate(result: CandidateResult) -> Candidate:
    return Candidate(
        transform=result.transform.kind.value,
        learning_rate=result.learning_rate,
        epochs=result.best_epoch,
        epochs_run=result.epochs_run,
        shrink=result.transform.shrink if result.transform.is_difference else None,
        selection_rmse=result.selection_rmse if math.isfinite(result.selection_rmse) else None,
        seconds=round(result.seconds, 3),
    )


def manifest_builder(record: JobRecord, created: datetime) -> Callable[[WeightsInfo], Manifest]:
    """The manifest, once the weights' checksum is known (the version embeds it)."""
    import keras
    import numpy as np
    import tensorflow as tf

    chosen, split, settings = record.chosen, record.split, record.settings
    version_stem = created.strftime("%Y%m%dT%H%M%S%fZ")

    def build(weights_info: WeightsInfo) -> Manifest:
        return Manifest(
            format_version=FORMAT_VERSION,
            version=f"{version_stem}-{weights_info.sha256[:8]}",
            created_at=created.isoformat(),
            architecture=Architecture(units=settings.units),
            training=TrainingInfo(
                batch_size=settings.batch_size,
                epochs=chosen.best_epoch,
                max_epochs=settings.max_epochs,
                patience=settings.patience,
                learning_rate=chosen.learning_rate,
                seed=settings.seed,
                window_length=chosen.window_length,
                samples_used=chosen.samples_used,
                final_loss=chosen.best_loss,
                seconds=round(record.seconds, 3),
            ),
            transform=chosen.transform.to_dict(),
            calibration=record.calibration,
            scaling=Scaling(minimum=chosen.scaler.minimum, maximum=chosen.scaler.maximum),
            selection=SelectionInfo(
                fraction=record.selection_fraction,
                start=split.selection_start,
                length=split.train_length - split.selection_start,
                in_sample=split.in_sample,
                kpss=_stationarity(record.kpss),
                transforms=[kind.value for kind in record.kinds],
                beats_persistence=record.beats_persistence,
            ),
            search=[_candidate(result) for result in record.results],
            data=DataInfo(
                source=record.series.source,
                column=record.series.column,
                sha256=record.series.sha256,
                length=split.length,
                train_length=split.train_length,
                validation_fraction=record.validation_fraction,
            ),
            metrics=record.evaluation.metrics,
            software={
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
            },
            weights=weights_info,
        )

    return build
