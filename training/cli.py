"""``python -m training``: train, evaluate, and save an artifact under ``--out``."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from forecast_core.artifact import (
    FORMAT_VERSION,
    LATEST_LINK,
    Architecture,
    DataInfo,
    Manifest,
    Scaling,
    TrainingInfo,
    WeightsInfo,
    write_artifact,
)
from training.data import (
    TUTORIAL_SOURCE,
    DataError,
    Series,
    load_csv_series,
    prepare_training_data,
    tutorial_series,
)

EXIT_BAD_INPUT = 2
PLOT_FILE = "evaluation.png"
# Series up to this length get the tutorial's Expected/Predicted table.
TABLE_MAX_LENGTH = 30


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


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


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
    parser.add_argument("--epochs", type=_positive_int, default=1000)
    parser.add_argument("--units", type=_positive_int, default=10, help="LSTM units")
    parser.add_argument("--learning-rate", type=_positive_float, default=0.01, help="Adam rate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=None,
        help="trailing part held out (default: 0 for the tutorial sequence, 0.2 for a CSV)",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when --out already holds a model (for start-up scripts and compose)",
    )
    return parser


class _ProgressBar:
    """Epoch and loss on one rewritten terminal line."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream

    def __call__(self, epoch: int, loss: float) -> None:
        filled = int(30 * epoch / self.total)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] epoch {epoch}/{self.total} loss {loss:.3e}"
        )
        if epoch == self.total:
            self.stream.write("\n")
        self.stream.flush()


def _load_series(args: argparse.Namespace) -> Series:
    if args.data == TUTORIAL_SOURCE:
        if args.column is not None:
            raise DataError("--column applies only to a CSV given with --data")
        return tutorial_series()
    return load_csv_series(Path(args.data), args.column)


def main(argv: list[str] | None = None) -> int:
    """Run the training job; exit code 2 with one line on bad input."""
    args = build_parser().parse_args(argv)
    say = (lambda _line: None) if args.quiet else print
    if args.if_missing and (args.out / LATEST_LINK).exists():
        say(f"{args.out / LATEST_LINK} exists; nothing to train (--if-missing)")
        return 0
    try:
        series = _load_series(args)
        fraction = args.validation_fraction
        if fraction is None:
            fraction = 0.0 if series.source == TUTORIAL_SOURCE else 0.2
        data = prepare_training_data(series.values, args.batch_size, fraction)
    except DataError as error:
        print(f"python -m training: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out.exists() and not args.out.is_dir():
        print(f"python -m training: error: --out {args.out} is not a folder", file=sys.stderr)
        return EXIT_BAD_INPUT

    # TensorFlow is imported only once the input is known to be good: bad input fails fast.
    from training.evaluate import evaluate, tutorial_table
    from training.plot import save_evaluation_plot
    from training.trainer import train_compiled

    say(
        f"training on {series.source}: {len(series.values)} values, "
        f"{data.train_length} for training, batch size {args.batch_size}, "
        f"{data.inputs.shape[0]} batches of parallel contiguous streams"
    )
    if data.samples_trimmed:
        say(
            f"trimmed the first {data.samples_trimmed} training pair(s) to fit a multiple of "
            f"batch size {args.batch_size}"
        )
    show_progress = not args.quiet and sys.stderr.isatty()
    started = time.perf_counter()
    result = train_compiled(
        data,
        units=args.units,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        seed=args.seed,
        progress=_ProgressBar(args.epochs, sys.stderr) if show_progress else None,
    )
    seconds = time.perf_counter() - started
    say(f"trained {args.epochs} epochs in {seconds:.1f} s, final loss {result.losses[-1]:.3e}")

    weights = result.weights
    evaluation = evaluate(weights, args.units, data.scaler, series.values, data.train_length)
    if len(series.values) <= TABLE_MAX_LENGTH:
        for line in tutorial_table(series.values, evaluation.forecasts):
            say(line)
    for part, scores in (
        ("train", evaluation.metrics.train),
        ("validation", evaluation.metrics.validation),
    ):
        if scores is not None:
            say(
                f"{part:>10}: RMSE {scores.rmse:.4g} (persistence {scores.persistence_rmse:.4g}), "
                f"MAE {scores.mae:.4g} (persistence {scores.persistence_mae:.4g}), "
                f"{scores.count} forecasts"
            )
    held_out = evaluation.metrics.validation
    if held_out is not None and held_out.rmse >= held_out.persistence_rmse:
        say(
            "warning: on the validation part the model does not beat next = last; "
            "try fewer --epochs or a lower --learning-rate"
        )

    import keras
    import numpy as np
    import tensorflow as tf

    created = datetime.now(UTC)
    version_stem = created.strftime("%Y%m%dT%H%M%S%fZ")

    def build_manifest(weights_info: WeightsInfo) -> Manifest:
        return Manifest(
            format_version=FORMAT_VERSION,
            version=f"{version_stem}-{weights_info.sha256[:8]}",
            created_at=created.isoformat(),
            architecture=Architecture(units=args.units),
            training=TrainingInfo(
                batch_size=args.batch_size,
                epochs=args.epochs,
                learning_rate=args.learning_rate,
                seed=args.seed,
                samples_used=data.samples_used,
                samples_trimmed=data.samples_trimmed,
                final_loss=float(result.losses[-1]),
                seconds=round(seconds, 3),
            ),
            scaling=Scaling(min=data.scaler.minimum, max=data.scaler.maximum),
            data=DataInfo(
                source=series.source,
                column=series.column,
                sha256=series.sha256,
                length=len(series.values),
                train_length=data.train_length,
                validation_fraction=fraction,
            ),
            metrics=evaluation.metrics,
            software={
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
            },
            weights=weights_info,
        )

    def add_plot(folder: Path) -> None:
        save_evaluation_plot(
            folder / PLOT_FILE,
            series.values,
            evaluation.forecasts,
            data.train_length,
            result.losses,
            title=f"{series.source}: one-step forecasts of a batch-1 copy",
        )

    folder = write_artifact(args.out, weights, build_manifest, add_plot)
    say(f"saved artifact {folder} (latest -> {folder.name})")
    return 0
