"""Time the tutorial's training loop and the compiled trainer on the same job, in one run.

    python -m bench.training_speed [--epochs 1000] [--batch-size 3]

Target: the compiled trainer at least 20x faster, with the same weights.
"""

from __future__ import annotations

import argparse
import time

from forecast_core.quiet_tensorflow import quiet_tensorflow

quiet_tensorflow()

import numpy as np  # noqa: E402

from forecast_core.transform import TransformKind  # noqa: E402
from training.data import network_series, tutorial_series  # noqa: E402
from training.trainer import Sampling, train_compiled, train_with_fit_loop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    series = network_series(tutorial_series().values, TransformKind.LEVEL)

    started = time.perf_counter()
    reference = train_with_fit_loop(
        series,
        batch_size=args.batch_size,
        units=10,
        epochs=args.epochs,
        learning_rate=0.01,
        seed=args.seed,
    )
    loop_seconds = time.perf_counter() - started
    started = time.perf_counter()
    compiled = train_compiled(
        series,
        batch_size=args.batch_size,
        units=10,
        epochs=args.epochs,
        learning_rate=0.01,
        seed=args.seed,
        sampling=Sampling.fixed(),  # the tutorial's streams, to compare like with like
    )
    compiled_seconds = time.perf_counter() - started

    max_difference = max(
        float(np.abs(a - b).max()) for a, b in zip(reference.weights, compiled.weights, strict=True)
    )
    print(f"job: tutorial sequence, batch size {args.batch_size}, {args.epochs} epochs")
    print(f"tutorial loop (fit(epochs=1) + reset): {loop_seconds:8.2f} s")
    print(f"compiled trainer (tf.function):        {compiled_seconds:8.2f} s")
    print(f"speed-up: {loop_seconds / compiled_seconds:.1f}x (target >= 20x)")
    print(f"largest weight difference: {max_difference:.3g}")


if __name__ == "__main__":
    main()
