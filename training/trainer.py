"""Training the batch-N network: the tutorial's loop, compiled.

The tutorial runs ``fit(epochs=1)`` then resets the state, once per epoch (about 65 s for 1000
epochs here). :func:`train_compiled` does the same updates in the same order inside one
``tf.function`` over a chunk of epochs, which gives the same weights in a few seconds.
:func:`train_with_fit_loop` is the tutorial's loop, kept as the reference for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from forecast_core.network import LSTM_LAYER_NAME, build_network, reset_states
from training.data import TrainingData

if TYPE_CHECKING:
    import keras

# Epochs per compiled call: large enough that Python overhead vanishes, small enough for a
# progress bar that moves.
EPOCHS_PER_CALL = 50

ProgressCallback = Callable[[int, float], None]


@dataclass(frozen=True)
class TrainingResult:
    model: keras.Model
    losses: npt.NDArray[np.float64]  # mean training loss of each epoch

    @property
    def weights(self) -> list[npt.NDArray[np.float32]]:
        return [np.asarray(w, dtype=np.float32) for w in self.model.get_weights()]


def _seeded_network(batch_size: int, units: int, seed: int) -> keras.Model:
    import keras

    keras.utils.set_random_seed(seed)
    return build_network(batch_size, units)


def train_compiled(
    data: TrainingData,
    *,
    units: int,
    epochs: int,
    learning_rate: float,
    seed: int,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train with state reset after every epoch, all batches of many epochs in one graph."""
    import keras
    import tensorflow as tf

    batches, batch_size = data.inputs.shape[:2]
    model = _seeded_network(batch_size, units, seed)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.MeanSquaredError()
    lstm = model.get_layer(LSTM_LAYER_NAME)
    inputs = tf.constant(data.inputs, dtype=tf.float32)
    targets = tf.constant(data.targets, dtype=tf.float32)

    @tf.function  # type: ignore[untyped-decorator]
    def run_epochs(count: tf.Tensor) -> tf.Tensor:
        losses = tf.TensorArray(tf.float32, size=count)
        for epoch in tf.range(count):
            total = tf.constant(0.0)
            for batch in tf.range(batches):
                with tf.GradientTape() as tape:
                    predictions = model(inputs[batch], training=True)
                    loss = loss_fn(targets[batch], predictions)
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply(gradients, model.trainable_variables)
                total += loss
            lstm.reset_state()
            losses = losses.write(epoch, total / tf.cast(batches, tf.float32))
        return losses.stack()

    history: list[float] = []
    while len(history) < epochs:
        count = min(EPOCHS_PER_CALL, epochs - len(history))
        history.extend(float(v) for v in run_epochs(tf.constant(count)).numpy())
        if progress is not None:
            progress(len(history), history[-1])
    return TrainingResult(model=model, losses=np.asarray(history))


def train_with_fit_loop(
    data: TrainingData, *, units: int, epochs: int, learning_rate: float, seed: int
) -> TrainingResult:
    """The tutorial's loop: ``fit(epochs=1, shuffle=False)`` then reset, once per epoch."""
    import keras

    batches, batch_size = data.inputs.shape[:2]
    model = _seeded_network(batch_size, units, seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    x = data.inputs.reshape(batches * batch_size, 1, 1).astype(np.float32)
    y = data.targets.reshape(batches * batch_size, 1).astype(np.float32)
    history: list[float] = []
    for _ in range(epochs):
        fitted = model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
        history.append(float(fitted.history["loss"][0]))
        reset_states(model)
    return TrainingResult(model=model, losses=np.asarray(history))
