"""The search: learning rate x transform, every choice scored on the selection window.

A candidate is trained on the part before the selection window with early stopping on the
window's one-step RMSE (a session fed the series from its start, as serving would); a difference
model's shrink factor is fitted on the same window. The candidate with the lowest score wins.
Nothing here sees the validation tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from forecast_core.arrays import FloatArray
from forecast_core.lstm_step import LstmWeights
from forecast_core.scaling import MinMaxScaler
from forecast_core.session_step import SessionStep
from forecast_core.transform import Transform, TransformKind
from training.data import Split, network_series
from training.evaluate import rmse
from training.stationarity import KpssResult
from training.trainer import EarlyStopping, Sampling, WeightList, train_compiled

# The KPSS test's table is asymptotic; on fewer values than this it says little, and both
# transforms compete (the tutorial's ten values among them).
MIN_KPSS_LENGTH = 30
# p below this: the series is not level-stationary, and only a difference model may compete
# (a level model can win a short window and then fail on the tail of a trending series).
KPSS_LEVEL = 0.05

# Default learning rates to search. Held-out selection: 0.01 overfits noisy series (it wins a
# selection window by chance, then loses on the tail), the two slower rates do better. A series
# too short for a held-out window gets a handful of optimizer steps per epoch (the tutorial's
# ten values: 3, against 200 for a 1,000-value series), so at the same --epochs the slow rates
# leave it under-fitted, and there is no held-out window a slower fit could protect.
HELD_OUT_LEARNING_RATES = (0.003, 0.001)
IN_SAMPLE_LEARNING_RATES = (0.01, 0.003)

CandidateProgress = Callable[[str], Callable[[int, float], None] | None]


@dataclass(frozen=True)
class SearchSettings:
    learning_rates: tuple[float, ...]
    batch_size: int
    units: int
    max_epochs: int
    patience: int
    score_every: int
    seed: int
    sampling: Sampling


@dataclass(frozen=True)
class CandidateResult:
    transform: Transform  # with the fitted shrink for a difference model
    learning_rate: float
    scaler: MinMaxScaler
    weights: WeightList
    best_epoch: int
    epochs_run: int
    selection_rmse: float
    losses: FloatArray
    best_loss: float
    window_length: int
    samples_used: int
    seconds: float

    @property
    def label(self) -> str:
        return f"{self.transform.kind.value} lr {self.learning_rate:g}"


def default_learning_rates(split: Split) -> tuple[float, ...]:
    """The rates searched when --learning-rate is not given."""
    return IN_SAMPLE_LEARNING_RATES if split.in_sample else HELD_OUT_LEARNING_RATES


def allowed_transforms(requested: str, kpss: KpssResult | None) -> tuple[TransformKind, ...]:
    """The transforms that compete: the requested one, or for ``auto`` the KPSS-gated pair."""
    if requested != "auto":
        return (TransformKind(requested),)
    if kpss is not None and kpss.p_value < KPSS_LEVEL:
        return (TransformKind.DIFFERENCE,)
    return (TransformKind.LEVEL, TransformKind.DIFFERENCE)


def fit_shrink(actual: FloatArray, previous: FloatArray, forecast: FloatArray) -> float:
    """Least-squares s in [0, 1] for ``previous + s * (forecast - previous)``."""
    step = forecast - previous
    denominator = float(np.dot(step, step))
    if denominator == 0.0:
        return 0.0
    return float(np.clip(np.dot(actual - previous, step) / denominator, 0.0, 1.0))


def score_on_window(step: SessionStep, values: FloatArray, split: Split) -> tuple[float, Transform]:
    """Selection-window RMSE, and the transform with its fitted shrink; state carried throughout."""
    forecasts = step.one_step_forecasts(values[: split.train_length])
    window = slice(split.selection_start, split.train_length)
    actual = values[window]
    previous = values[split.selection_start - 1 : split.train_length - 1]
    forecast = forecasts[split.selection_start - 1 :]
    transform = step.transform
    if transform.is_difference:
        shrink = fit_shrink(actual, previous, forecast)
        transform = Transform.difference(shrink)
        forecast = previous + shrink * (forecast - previous)
    score = rmse(forecast - actual)
    # A diverged candidate must lose, not poison the comparison (NaN compares false).
    return (score if np.isfinite(score) else np.inf), transform


def _session_step(weights: WeightList, kind: TransformKind, scaler: MinMaxScaler) -> SessionStep:
    return SessionStep(LstmWeights.from_list(list(weights)), Transform(kind), scaler)


def train_candidate(
    values: FloatArray,
    split: Split,
    kind: TransformKind,
    learning_rate: float,
    settings: SearchSettings,
    progress: Callable[[int, float], None] | None = None,
) -> CandidateResult:
    """Train one configuration with early stopping on the selection window."""
    started = time.perf_counter()
    series = network_series(values[: split.fit_length], kind)

    def score(weights: WeightList) -> float:
        return score_on_window(_session_step(weights, kind, series.scaler), values, split)[0]

    result = train_compiled(
        series,
        batch_size=settings.batch_size,
        units=settings.units,
        epochs=settings.max_epochs,
        learning_rate=learning_rate,
        seed=settings.seed,
        sampling=settings.sampling,
        early_stopping=EarlyStopping(score, settings.patience, settings.score_every),
        progress=progress,
    )
    weights = result.weights
    selection_rmse, transform = score_on_window(
        _session_step(weights, kind, series.scaler), values, split
    )
    pairs = len(series.inputs)
    return CandidateResult(
        transform=transform,
        learning_rate=learning_rate,
        scaler=series.scaler,
        weights=weights,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        selection_rmse=selection_rmse,
        losses=result.losses,
        best_loss=result.best_loss,
        window_length=pairs // settings.batch_size,
        samples_used=pairs,
        seconds=time.perf_counter() - started,
    )


def run_search(
    values: FloatArray,
    split: Split,
    kinds: Sequence[TransformKind],
    settings: SearchSettings,
    progress: CandidateProgress | None = None,
) -> list[CandidateResult]:
    """Every transform x learning rate, in that order; see :func:`best_candidate`."""
    results = []
    for kind in kinds:
        for learning_rate in settings.learning_rates:
            label = f"{kind.value} lr {learning_rate:g}"
            callback = progress(label) if progress is not None else None
            results.append(train_candidate(values, split, kind, learning_rate, settings, callback))
    return results


def best_candidate(results: Sequence[CandidateResult]) -> CandidateResult:
    """The lowest selection score; the earlier candidate on a tie."""
    return min(results, key=lambda result: result.selection_rmse)
