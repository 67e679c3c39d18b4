"""Time the tutorial's training loop and the compiled trainer on the same job, in one run.

    python -m bench.training_speed [--epochs 1000] [--batch-size 3]

Target: the compiled trainer at least 20x faster, with the same weights.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from training.data import prepare_training_data, tutorial_series  # noqa: E402
from training.trainer import train_compiled, train_with_fit_loop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data = prepare_training_data(tutorial_series().values, args.batch_size, 0.0)
    job = {"units": 10, "epochs": args.epochs, "learning_rate": 0.01, "seed": args.seed}

    started = time.perf_counter()
    reference = train_with_fit_loop(data, **job)
    loop_seconds = time.perf_counter() - started
    started = time.perf_counter()
    compiled = train_compiled(data, **job)
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
