"""Forecast quality of the default training job against persistence and a classical ARIMA.

    python -m bench.forecast_quality [--series nile,trend] [--seed 1] [-- extra training flags]

For each series: the training job with default flags (a subprocess, so the time includes
start-up), then an ARIMA fitted on the same training part (order by AIC over p, q in 0..2,
d in 0..1; a constant for d = 0, a drift for d = 1) and run one step at a time over the same
validation tail with its state updated (``results.append``). Prints validation-tail RMSE divided
by the persistence forecast's (next = last) for both, the LSTM's chosen transform and the job's
time. Targets: no series above 1.05, most at or below 0.9, within 10 % of ARIMA on most.
Needs statsmodels (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forecast_core.arrays import FloatArray
from forecast_core.quiet_tensorflow import QUIET_TENSORFLOW_ENV

REPO = Path(__file__).resolve().parent.parent
NILE_CSV = REPO / "tests" / "data" / "nile.csv"
VALIDATION_FRACTION = 0.2  # the job's default for a CSV
SYNTHETIC_LENGTH = 1000


def _synthetic(kind: str) -> FloatArray:
    rng = np.random.default_rng(20240611)
    t = np.arange(SYNTHETIC_LENGTH, dtype=np.float64)
    noise = rng.normal(0.0, 1.0, SYNTHETIC_LENGTH)
    season = 3.0 * np.sin(2 * np.pi * t / 12)
    if kind == "trend":
        return 5.0 + 0.05 * t + noise
    if kind == "season":
        return 20.0 + season + 0.5 * noise
    if kind == "trend_season":
        return 10.0 + 0.02 * t + season + 0.5 * noise
    if kind == "random_walk":
        return 50.0 + np.cumsum(noise)
    if kind == "level_shift":
        return 10.0 + 2.0 * noise + np.where(t >= SYNTHETIC_LENGTH // 2, 6.0, 0.0)
    raise ValueError(kind)


def _statsmodels(dataset: str, column: str) -> Callable[[], FloatArray]:
    def load() -> FloatArray:
        import statsmodels.api as sm

        frame = getattr(sm.datasets, dataset).load_pandas().data
        return np.asarray(frame[column].interpolate().to_numpy(), dtype=np.float64)

    return load


def _nile() -> FloatArray:
    with NILE_CSV.open() as handle:
        return np.asarray([float(row["volume"]) for row in csv.DictReader(handle)])


SERIES: dict[str, Callable[[], FloatArray]] = {
    "nile": _nile,
    "trend": lambda: _synthetic("trend"),
    "season": lambda: _synthetic("season"),
    "trend_season": lambda: _synthetic("trend_season"),
    "random_walk": lambda: _synthetic("random_walk"),
    "level_shift": lambda: _synthetic("level_shift"),
    "realgdp": _statsmodels("macrodata", "realgdp"),
    "unemp": _statsmodels("macrodata", "unemp"),
    "cpi": _statsmodels("macrodata", "cpi"),
    "co2_weekly": _statsmodels("co2", "co2"),
    "sunspots": _statsmodels("sunspots", "SUNACTIVITY"),
}


@dataclass(frozen=True)
class Row:
    name: str
    length: int
    lstm_ratio: float
    arima_ratio: float
    transform: str
    learning_rate: float
    epochs: int
    beats_persistence: bool
    seconds: float
    arima_order: tuple[int, int, int]
    coverage: dict[int, float]  # served intervals on the validation tail, per level
    arima_coverage: dict[int, float]


LEVELS = (80, 95)


def served_coverage(models: Path, values: FloatArray, tail_start: int) -> dict[int, float]:
    """Share of the validation tail's values inside the intervals a session forecast for them.

    The service's own code path without HTTP: one session fed the series value by value from
    its start (app.session_rules.feed with the interval policy of the default settings).
    """
    from app.forecaster import Forecaster
    from app.intervals import IntervalPolicy
    from app.session_rules import SessionRecord, feed
    from app.settings import Settings
    from forecast_core.artifact import load_artifact

    artifact = load_artifact(models)
    model = Forecaster(artifact.session_step(), artifact.manifest)  # checked by the tests
    settings = Settings()
    policy = IntervalPolicy.for_settings(artifact.manifest.calibration, settings)
    record: SessionRecord | None = None
    inside = dict.fromkeys(LEVELS, 0)
    intervals: list[Any] = []
    for index, value in enumerate(values.tolist()):
        if index >= tail_start:
            for interval in intervals:
                inside[interval["level"]] += interval["lower"] <= value <= interval["upper"]
        record, outcome = feed(record, model, policy, [value], None, 0.0)
        intervals = policy.intervals(outcome.predictions[-1], outcome.offsets, LEVELS)
    return {level: count / (len(values) - tail_start) for level, count in inside.items()}


def run_job(
    values: FloatArray, seed: int, extra: list[str]
) -> tuple[dict[str, Any], float, dict[int, float]]:
    """The training job with default flags; its manifest, wall time and served coverage."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "series.csv"
        data.write_text("value\n" + "\n".join(repr(float(v)) for v in values) + "\n")
        out = Path(folder) / "models"
        command = [sys.executable, "-m", "training", "--data", str(data), "--out", str(out)]
        started = time.perf_counter()
        subprocess.run(
            [*command, "--quiet", "--seed", str(seed), *extra],
            cwd=REPO,
            env={**os.environ, **QUIET_TENSORFLOW_ENV},
            check=True,
        )
        seconds = time.perf_counter() - started
        manifest = json.loads((out / "latest" / "manifest.json").read_text())
        coverage = served_coverage(out, values, manifest["data"]["train_length"])
    return manifest, seconds, coverage


def arima_ratio(
    values: FloatArray, train_length: int
) -> tuple[float, tuple[int, int, int], dict[int, float]]:
    """Validation-tail RMSE / persistence RMSE of the AIC-best ARIMA, one step at a time, and
    the coverage of its own prediction intervals on the tail."""
    from statsmodels.tsa.arima.model import ARIMA

    train, tail = values[:train_length], values[train_length:]
    best: tuple[float, tuple[int, int, int], object] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on the poorer orders
        for p, d, q in itertools.product(range(3), range(2), range(3)):
            try:
                fitted = ARIMA(train, order=(p, d, q), trend="c" if d == 0 else "t").fit()
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(fitted.aic) and (best is None or fitted.aic < best[0]):
                best = (float(fitted.aic), (p, d, q), fitted)
        assert best is not None
        _, order, fitted = best
        # Appending the tail keeps the fitted parameters and updates the state value by value:
        # the predictions from train_length on are one-step-ahead forecasts.
        extended = fitted.append(tail)  # type: ignore[attr-defined]
        prediction = extended.get_prediction(start=train_length, end=len(values) - 1)
        forecasts = np.asarray(prediction.predicted_mean)
        coverage = {}
        for level in LEVELS:
            bounds = np.asarray(prediction.conf_int(alpha=1 - level / 100))
            coverage[level] = float(np.mean((bounds[:, 0] <= tail) & (tail <= bounds[:, 1])))
    previous = values[train_length - 1 : -1]
    ratio = np.sqrt(np.mean((forecasts - tail) ** 2)) / np.sqrt(np.mean((previous - tail) ** 2))
    return float(ratio), order, coverage


def bench_series(name: str, seed: int, extra: list[str]) -> Row:
    values = SERIES[name]()
    manifest, seconds, coverage = run_job(values, seed, extra)
    validation = manifest["metrics"]["validation"]
    ratio, order, arima_coverage = arima_ratio(values, manifest["data"]["train_length"])
    transform = manifest["transform"]
    label = transform["kind"]
    if "shrink" in transform:
        label += f" s={transform['shrink']:.2f}"
    return Row(
        name=name,
        length=len(values),
        lstm_ratio=validation["rmse"] / validation["persistence_rmse"],
        arima_ratio=ratio,
        transform=label,
        learning_rate=manifest["training"]["learning_rate"],
        epochs=manifest["training"]["epochs"],
        beats_persistence=manifest["selection"]["beats_persistence"],
        seconds=seconds,
        arima_order=order,
        coverage=coverage,
        arima_coverage=arima_coverage,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", default=",".join(SERIES), help="comma-separated names")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="extra training flags (after --)")
    args = parser.parse_args()
    print(
        "| series | n | LSTM / persistence | ARIMA / persistence | LSTM / ARIMA | transform | "
        "lr | epochs | beats persistence (selection) | ARIMA order | job s | "
        "coverage 80 / 95 | ARIMA coverage 80 / 95 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for name in args.series.split(","):
        row = bench_series(name, args.seed, args.extra)
        rows.append(row)
        print(
            f"| {row.name} | {row.length} | {row.lstm_ratio:.3f} | {row.arima_ratio:.3f} | "
            f"{row.lstm_ratio / row.arima_ratio:.3f} | {row.transform} | {row.learning_rate:g} | "
            f"{row.epochs} | {'yes' if row.beats_persistence else 'no'} | {row.arima_order} | "
            f"{row.seconds:.1f} | {row.coverage[80]:.2f} / {row.coverage[95]:.2f} | "
            f"{row.arima_coverage[80]:.2f} / {row.arima_coverage[95]:.2f} |",
            flush=True,
        )
    lstm = np.array([row.lstm_ratio for row in rows])
    arima = np.array([row.arima_ratio for row in rows])
    print(
        f"\nLSTM/persistence: median {np.median(lstm):.3f}, worst {lstm.max():.3f}, "
        f"{int(np.sum(lstm <= 0.9))}/{len(rows)} at or below 0.9, "
        f"{int(np.sum(lstm > 1.05))} above 1.05; ARIMA median {np.median(arima):.3f}; "
        f"LSTM within 10 % of ARIMA on {int(np.sum(lstm <= 1.1 * arima))}/{len(rows)}"
    )
    for level in LEVELS:
        ours = np.array([row.coverage[level] for row in rows])
        theirs = np.array([row.arima_coverage[level] for row in rows])
        print(
            f"{level} % intervals on the validation tails: mean coverage {ours.mean():.3f}, "
            f"lowest {ours.min():.3f} (ARIMA's own: mean {theirs.mean():.3f}, "
            f"lowest {theirs.min():.3f})"
        )


if __name__ == "__main__":
    main()
