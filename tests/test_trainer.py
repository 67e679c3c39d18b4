"""The compiled trainer: the tutorial's loop when asked, early stopping that keeps the best."""

from __future__ import annotations

import numpy as np
import pytest

from forecast_core.transform import TransformKind
from tests.conftest import NILE_CSV
from training.data import load_csv_series, network_series, tutorial_series
from training.trainer import (
    EarlyStopping,
    Sampling,
    WeightList,
    train_compiled,
    train_with_fit_loop,
)


@pytest.mark.parametrize(
    ("source", "batch_size"),
    [("tutorial", 3), ("nile", 4)],
    ids=["tutorial-N3", "nile-N4"],
)
def test_fixed_sampling_matches_the_tutorial_fit_loop(source: str, batch_size: int) -> None:
    values = (
        tutorial_series().values if source == "tutorial" else load_csv_series(NILE_CSV, None).values
    )
    series = network_series(values, TransformKind.LEVEL)
    compiled = train_compiled(
        series,
        batch_size=batch_size,
        units=10,
        epochs=4,
        learning_rate=0.01,
        seed=7,
        sampling=Sampling.fixed(),
    )
    reference = train_with_fit_loop(
        series, batch_size=batch_size, units=10, epochs=4, learning_rate=0.01, seed=7
    )
    for ours, theirs in zip(compiled.weights, reference.weights, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(compiled.losses, reference.losses, rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_same_seed_gives_same_weights_with_random_windows_and_states(jit_compile: bool) -> None:
    series = network_series(load_csv_series(NILE_CSV, None).values, TransformKind.DIFFERENCE)

    def weights(seed: int) -> WeightList:
        return train_compiled(
            series,
            batch_size=3,
            units=10,
            epochs=6,
            learning_rate=0.003,
            seed=seed,
            jit_compile=jit_compile,
        ).weights

    first, second, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_early_stopping_restores_the_best_weights_and_stops_after_patience() -> None:
    series = network_series(load_csv_series(NILE_CSV, None).values, TransformKind.LEVEL)
    scripted = iter([5.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0])
    seen: list[WeightList] = []

    def score(weights: WeightList) -> float:
        seen.append([w.copy() for w in weights])
        return next(scripted)

    result = train_compiled(
        series,
        batch_size=3,
        units=10,
        epochs=100,
        learning_rate=0.01,
        seed=1,
        early_stopping=EarlyStopping(score, patience=6, every=2),
    )
    # Best after epoch 4 (second check); no better score for 6 epochs: stopped after epoch 10.
    assert (result.best_epoch, result.best_score, result.epochs_run) == (4, 3.0, 10)
    assert [epoch for epoch, _ in result.scores] == [2, 4, 6, 8, 10]
    assert all(np.array_equal(a, b) for a, b in zip(result.weights, seen[1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(result.weights, seen[-1], strict=True))
