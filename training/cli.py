"""``python -m training``: train, evaluate, and save an artifact under ``--out``."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from forecast_core.artifact import (
    DEFAULT_MODEL,
    EVALUATION_PLOT,
    LATEST_LINK,
    MODEL_NAME_PATTERN,
    write_artifact,
)
from forecast_core.quiet_tensorflow import quiet_tensorflow
from forecast_core.transform import TransformKind
from training.data import (
    TUTORIAL_SOURCE,
    DataError,
    Series,
    Split,
    load_csv_series,
    min_fit_values,
    network_series,
    split_series,
    tutorial_series,
)
from training.search import (
    KPSS_LEVEL,
    MIN_KPSS_LENGTH,
    allowed_transforms,
    default_learning_rates,
)
from training.stationarity import KpssResult, kpss_level

EXIT_BAD_INPUT = 2
# Series up to this length get the tutorial's Expected/Predicted table.
TABLE_MAX_LENGTH = 30
# Early stopping scores the selection window once per this many epochs (one compiled call).
SCORE_EVERY_EPOCHS = 10
# A selection window with fewer forecasts than this is too noisy to choose on; shorter
# training parts are scored in-sample (see split_series).
MIN_SELECTION_VALUES = 10
TRANSFORM_CHOICES = ("auto", *(kind.value for kind in TransformKind))


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _learning_rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(_positive_float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers above 0, got {text!r}") from None
    if len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"lists a rate twice: {text!r}")
    return rates


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _model_name(text: str) -> str:
    if not re.match(MODEL_NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model name: 1-64 characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m training",
        description="Train the stateful LSTM with batch size N and save a checked artifact.",
    )
    parser.add_argument(
        "--data", default=TUTORIAL_SOURCE, help="CSV path, or 'tutorial' for 0.0 ... 0.9"
    )
    parser.add_argument("--column", default=None, help="CSV column (default: the last)")
    parser.add_argument("--batch-size", type=_positive_int, default=3, help="training batch N")
    parser.add_argument(
        "--epochs", type=_positive_int, default=1000, help="most epochs per candidate"
    )
    parser.add_argument(
        "--patience",
        type=_positive_int,
        default=200,
        help="stop a candidate after this many epochs without a better selection score",
    )
    parser.add_argument("--units", type=_positive_int, default=10, help="LSTM units")
    parser.add_argument(
        "--learning-rate",
        type=_learning_rates,
        default=None,
        help=(
            "Adam learning rates to search, comma-separated (default 0.003,0.001; "
            "0.01,0.003 for a series too short for a held-out selection window)"
        ),
    )
    parser.add_argument(
        "--transform",
        choices=TRANSFORM_CHOICES,
        default="auto",
        help="what the network sees; auto: chosen on the selection window (KPSS-gated)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--selection-fraction",
        type=_fraction,
        default=0.2,
        help="end of the training part on which every choice is scored",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=None,
        help="trailing part held out (default: 0 for the tutorial sequence, 0.2 for a CSV)",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder")
    parser.add_argument(
        "--name",
        type=_model_name,
        default=None,
        help=(
            "serve it as this named model: written to OUT/NAME/<version> with OUT/NAME/latest "
            "(default, or 'default': OUT/<version> and OUT/latest, the model 'default')"
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when --out already holds a model (for start-up scripts and compose)",
    )
    return parser


class _ProgressBar:
    """Candidate, epoch and loss on one rewritten terminal line per candidate."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.label = ""

    def start(self, label: str) -> Callable[[int, float], None]:
        if self.label:
            self.stream.write("\n")
        self.label = label
        return self

    def __call__(self, epoch: int, loss: float) -> None:
        filled = int(30 * epoch / self.total)
        self.stream.write(
            f"\r{self.label:<18} [{'#' * filled}{'.' * (30 - filled)}] "
            f"epoch {epoch}/{self.total} loss {loss:.3e}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.label:
            self.stream.write("\n")
            self.stream.flush()


def _load_series(args: argparse.Namespace) -> Series:
    if args.data == TUTORIAL_SOURCE:
        if args.column is not None:
            raise DataError("--column applies only to a CSV given with --data")
        return tutorial_series()
    return load_csv_series(Path(args.data), args.column)


@dataclass(frozen=True)
class _Plan:
    series: Series
    validation_fraction: float
    split: Split
    kpss: KpssResult | None
    kinds: tuple[TransformKind, ...]
    learning_rates: tuple[float, ...]


def _plan(args: argparse.Namespace) -> _Plan:
    """Load and check everything the job needs before TensorFlow is imported."""
    series = _load_series(args)
    fraction = args.validation_fraction
    if fraction is None:
        fraction = 0.0 if series.source == TUTORIAL_SOURCE else 0.2
    requested = (
        tuple(TransformKind) if args.transform == "auto" else (TransformKind(args.transform),)
    )
    split = split_series(
        len(series.values),
        fraction,
        args.selection_fraction,
        batch_size=args.batch_size,
        min_fit_values=max(min_fit_values(kind, args.batch_size) for kind in requested),
        min_selection_values=MIN_SELECTION_VALUES,
    )
    train = series.values[: split.train_length]
    kpss = kpss_level(train) if split.train_length >= MIN_KPSS_LENGTH else None
    kinds = allowed_transforms(args.transform, kpss)
    for kind in kinds:
        network_series(series.values[: split.fit_length], kind)  # refuses unscalable data
    rates = args.learning_rate if args.learning_rate is not None else default_learning_rates(split)
    return _Plan(series, fraction, split, kpss, kinds, rates)


def main(argv: list[str] | None = None) -> int:
    """Run the training job; exit code 2 with one line on bad input."""
    args = build_parser().parse_args(argv)
    if args.name is not None and args.name != DEFAULT_MODEL:
        args.out = args.out / args.name
    say = (lambda _line: None) if args.quiet else print
    if args.if_missing and (args.out / LATEST_LINK).exists():
        say(f"{args.out / LATEST_LINK} exists; nothing to train (--if-missing)")
        return 0
    try:
        plan = _plan(args)
    except DataError as error:
        print(f"python -m training: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out.exists() and not args.out.is_dir():
        print(f"python -m training: error: --out {args.out} is not a folder", file=sys.stderr)
        return EXIT_BAD_INPUT

    # TensorFlow is imported only once the input is known to be good: bad input fails fast.
    # Quiet first, for the forecast-train script too (python -m training has already done so).
    quiet_tensorflow()
    from forecast_core.calibration import calibrate
    from forecast_core.lstm_step import LstmWeights
    from forecast_core.session_step import SessionStep
    from training.evaluate import evaluate, tutorial_table
    from training.manifest import JobRecord, manifest_builder
    from training.plot import save_evaluation_plot
    from training.report import guard_line, metrics_table, search_table
    from training.search import SearchSettings, best_candidate, run_search
    from training.trainer import Sampling

    series, split = plan.series, plan.split
    values = series.values
    say(
        f"training on {series.source}: {split.length} values, {split.train_length} in the "
        f"training part, batch size {args.batch_size}, random stream windows and start states"
    )
    if split.in_sample:
        say(
            f"selection: in-sample (the training part is too short for a held-out window of "
            f"{MIN_SELECTION_VALUES} values); choices are scored on the training part itself"
        )
    else:
        say(
            f"selection window: values {split.selection_start}..{split.train_length - 1} "
            f"({split.train_length - split.selection_start}); the network trains on the "
            f"{split.fit_length} before it"
        )
    if plan.kpss is not None:
        verdict = "not level-stationary" if plan.kpss.p_value < KPSS_LEVEL else "level-stationary"
        say(f"KPSS: statistic {plan.kpss.statistic:.3f}, p {plan.kpss.p_value:.3f}: {verdict}")
    say(
        f"candidates: {', '.join(k.value for k in plan.kinds)} x learning rates "
        f"{', '.join(f'{r:g}' for r in plan.learning_rates)}"
    )

    settings = SearchSettings(
        learning_rates=plan.learning_rates,
        batch_size=args.batch_size,
        units=args.units,
        max_epochs=args.epochs,
        patience=args.patience,
        score_every=SCORE_EVERY_EPOCHS,
        seed=args.seed,
        sampling=Sampling(),
    )
    bar = _ProgressBar(args.epochs, sys.stderr) if not args.quiet and sys.stderr.isatty() else None
    started = time.perf_counter()
    results = run_search(values, split, plan.kinds, settings, bar.start if bar else None)
    seconds = time.perf_counter() - started
    if bar is not None:
        bar.close()
    chosen = best_candidate(results)
    for line in search_table(results, chosen):
        say(line)
    say(f"searched {len(results)} candidate(s) in {seconds:.1f} s; chosen: {chosen.label}")

    step = SessionStep(LstmWeights.from_list(list(chosen.weights)), chosen.transform, chosen.scaler)
    evaluation = evaluate(step, values, split)
    if len(values) <= TABLE_MAX_LENGTH:
        for line in tutorial_table(values, evaluation.forecasts):
            say(line)
    for line in metrics_table(evaluation.metrics):
        say(line)
    # Interval radii from the selection window's residuals (never the validation tail).
    calibration = calibrate(
        step,
        values,
        max(1, split.selection_start),
        split.train_length,
        values[: split.train_length],
    )
    window = evaluation.metrics.selection
    beats_persistence = window is not None and window.rmse < window.persistence_rmse
    warning = guard_line(beats_persistence)
    if warning is not None:
        print(warning, file=sys.stderr if args.quiet else sys.stdout)

    record = JobRecord(
        series=series,
        split=split,
        validation_fraction=plan.validation_fraction,
        selection_fraction=args.selection_fraction,
        kpss=plan.kpss,
        kinds=plan.kinds,
        settings=settings,
        results=results,
        chosen=chosen,
        evaluation=evaluation,
        beats_persistence=beats_persistence,
        seconds=seconds,
        calibration=calibration,
    )

    def add_plot(folder: Path) -> None:
        metrics = evaluation.metrics
        save_evaluation_plot(
            folder / EVALUATION_PLOT,
            series,
            evaluation.forecasts,
            split,
            chosen.losses,
            chosen.best_epoch,
            title=f"{series.source}: one-step forecasts of a session ({chosen.label})",
            scores=metrics.validation if metrics.validation is not None else metrics.selection,
        )

    build_manifest = manifest_builder(record, datetime.now(UTC))
    folder = write_artifact(args.out, chosen.weights, build_manifest, add_plot)
    plot = folder / EVALUATION_PLOT
    say(f"saved artifact {folder} (latest -> {folder.name}); evaluation plot: {plot}")
    return 0
