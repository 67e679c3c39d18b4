"""Training the batch-N network: compiled epochs, random windows and start states, early stopping.

The tutorial runs ``fit(epochs=1)`` then resets the state, once per epoch (about 65 s for 1000
epochs here). :func:`train_compiled` does the updates inside one ``tf.function`` over a chunk of
epochs. With :class:`Sampling` ``fixed()`` it is the tutorial's loop on N contiguous streams from
zero state (same weights as :func:`train_with_fit_loop`, kept as the reference for tests and
benchmarks). The default draws, at every epoch start, N random stream windows and a random
(h, c) in [-1, 1]: the network learns to forget where it started, so a session that runs far
longer than a training stream stays stable.

Early stopping scores the weights once per chunk of epochs (the chunk is the scoring interval)
and restores the best.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from forecast_core.network import LSTM_LAYER_NAME, build_network, reset_states
from training.data import NetworkSeries, contiguous_starts, layout_streams, window_length

if TYPE_CHECKING:
    import keras

# Epochs per compiled call without early stopping: large enough that Python overhead vanishes,
# small enough for a progress bar that moves.
EPOCHS_PER_CALL = 50
# Streams at least this long are trained through XLA (jit_compile): compiling costs a few
# seconds, then each step takes about half as long, which pays off from series of a few hundred
# values (windows of 50+ steps at N = 3) but not for the tutorial's windows of 3.
XLA_MIN_WINDOW_LENGTH = 50
# Random start states are drawn uniformly from [-bound, bound], the range of h (tanh).
START_STATE_BOUND = 1.0

ProgressCallback = Callable[[int, float], None]
WeightList = list[npt.NDArray[np.float32]]
# Scores a candidate's weights on the selection window (lower is better).
ScoreFunction = Callable[[WeightList], float]


@dataclass(frozen=True)
class Sampling:
    """How each epoch's N streams are drawn."""

    random_positions: bool = True
    random_start_states: bool = True

    @classmethod
    def fixed(cls) -> Sampling:
        """The tutorial's: the same contiguous streams every epoch, from zero state."""
        return cls(random_positions=False, random_start_states=False)


@dataclass(frozen=True)
class EarlyStopping:
    score: ScoreFunction
    patience: int  # epochs without a better score before stopping
    every: int  # epochs between scores (one compiled call)


@dataclass(frozen=True)
class TrainingResult:
    model: keras.Model
    losses: npt.NDArray[np.float64]  # mean training loss of each epoch run
    best_epoch: int  # epoch whose weights the model holds (all epochs without early stopping)
    best_score: float  # NaN without early stopping
    scores: list[tuple[int, float]]  # (epoch, selection score) at each check

    @property
    def weights(self) -> WeightList:
        return [np.asarray(w, dtype=np.float32) for w in self.model.get_weights()]

    @property
    def epochs_run(self) -> int:
        return len(self.losses)

    @property
    def best_loss(self) -> float:
        """Mean training loss of the epoch whose weights the model holds (NaN before any)."""
        return float(self.losses[self.best_epoch - 1]) if self.best_epoch > 0 else math.nan


def _seeded_network(batch_size: int, units: int, seed: int) -> keras.Model:
    import keras

    keras.utils.set_random_seed(seed)
    return build_network(batch_size, units)


def train_compiled(
    series: NetworkSeries,
    *,
    batch_size: int,
    units: int,
    epochs: int,
    learning_rate: float,
    seed: int,
    sampling: Sampling | None = None,
    early_stopping: EarlyStopping | None = None,
    progress: ProgressCallback | None = None,
    jit_compile: bool | None = None,
) -> TrainingResult:
    """Train on N streams of ``series``; all batches of a chunk of epochs run in one graph.

    ``jit_compile`` None: through XLA when the streams are long (see XLA_MIN_WINDOW_LENGTH).
    Either way the same seed gives the same weights; the two paths draw different streams.
    """
    import keras
    import tensorflow as tf

    sampling = sampling or Sampling()
    pairs = len(series.inputs)
    length = window_length(pairs, batch_size)
    if length < 1:
        raise ValueError(f"{pairs} training pairs cannot fill {batch_size} streams")
    model = _seeded_network(batch_size, units, seed)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.MeanSquaredError()
    lstm = model.get_layer(LSTM_LAYER_NAME)
    generator = tf.random.Generator.from_seed(seed)
    all_inputs = tf.constant(series.inputs, dtype=tf.float32)
    all_targets = tf.constant(series.targets, dtype=tf.float32)
    fixed_starts = contiguous_starts(pairs, batch_size)
    fixed_inputs = tf.constant(layout_streams(series.inputs, fixed_starts, length), tf.float32)
    fixed_targets = tf.constant(
        layout_streams(series.targets, fixed_starts, length)[..., 0], tf.float32
    )
    offsets = tf.range(length)[:, None]

    def epoch_streams() -> tuple[tf.Tensor, tf.Tensor]:
        if not sampling.random_positions:
            return fixed_inputs, fixed_targets
        starts = generator.uniform([batch_size], 0, pairs - length + 1, dtype=tf.int32)
        index = starts[None, :] + offsets
        inputs = tf.gather(all_inputs, index)[:, :, None, None]
        return inputs, tf.gather(all_targets, index)[:, :, None]

    def start_states() -> None:
        if not sampling.random_start_states:
            lstm.reset_state()
            return
        for state in lstm.states:
            state.assign(generator.uniform(state.shape, -START_STATE_BOUND, START_STATE_BOUND))

    if jit_compile is None:
        jit_compile = length >= XLA_MIN_WINDOW_LENGTH

    @tf.function(jit_compile=jit_compile)  # type: ignore[untyped-decorator]
    def run_epochs(count: tf.Tensor) -> tf.Tensor:
        losses = tf.TensorArray(tf.float32, size=count)
        for epoch in tf.range(count):
            inputs, targets = epoch_streams()
            start_states()
            total = tf.constant(0.0)
            for step in tf.range(length):
                with tf.GradientTape() as tape:
                    predictions = model(inputs[step], training=True)
                    loss = loss_fn(targets[step], predictions)
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply(gradients, model.trainable_variables)
                total += loss
            losses = losses.write(epoch, total / tf.cast(length, tf.float32))
        return losses.stack()

    chunk = early_stopping.every if early_stopping is not None else EPOCHS_PER_CALL
    history: list[float] = []
    scores: list[tuple[int, float]] = []
    best_score, best_epoch, best_weights = math.inf, 0, model.get_weights()
    while len(history) < epochs:
        count = min(chunk, epochs - len(history))
        history.extend(float(v) for v in run_epochs(tf.constant(count)).numpy())
        if progress is not None:
            progress(len(history), history[-1])
        if early_stopping is None:
            continue
        score = early_stopping.score([np.asarray(w, np.float32) for w in model.get_weights()])
        scores.append((len(history), score))
        if score < best_score or best_epoch == 0:
            best_score, best_epoch, best_weights = score, len(history), model.get_weights()
        elif len(history) - best_epoch >= early_stopping.patience:
            break
    if early_stopping is None:
        best_epoch, best_score = len(history), math.nan
    else:
        model.set_weights(best_weights)
    reset_states(model)
    return TrainingResult(
        model=model,
        losses=np.asarray(history),
        best_epoch=best_epoch,
        best_score=best_score,
        scores=scores,
    )


def train_with_fit_loop(
    series: NetworkSeries,
    *,
    batch_size: int,
    units: int,
    epochs: int,
    learning_rate: float,
    seed: int,
) -> TrainingResult:
    """The tutorial's loop on contiguous streams: ``fit(epochs=1, shuffle=False)``, reset."""
    import keras

    pairs = len(series.inputs)
    length = window_length(pairs, batch_size)
    starts = contiguous_starts(pairs, batch_size)
    model = _seeded_network(batch_size, units, seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    x = layout_streams(series.inputs, starts, length).reshape(length * batch_size, 1, 1)
    y = layout_streams(series.targets, starts, length).reshape(length * batch_size, 1)
    history: list[float] = []
    for _ in range(epochs):
        fitted = model.fit(
            x.astype(np.float32),
            y.astype(np.float32),
            epochs=1,
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
        )
        history.append(float(fitted.history["loss"][0]))
        reset_states(model)
    return TrainingResult(
        model=model,
        losses=np.asarray(history),
        best_epoch=epochs,
        best_score=math.nan,
        scores=[],
    )
