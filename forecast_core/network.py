"""The one definition of the forecasting network, for any batch size.

Training builds it with batch size N, serving with batch size 1; both call :func:`build_network`
so the two can never drift apart. TensorFlow is imported lazily so that importing this package
(for example from the app at test-collection time) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

LSTM_LAYER_NAME = "lstm"
DENSE_LAYER_NAME = "dense"


def build_network(
    batch_size: int, units: int = 10, *, dtype: str = "float32", timesteps: int = 1
) -> keras.Model:
    """Build the stateful LSTM(units, tanh) -> Dense(1) network for inputs of shape (batch, 1, 1).

    ``timesteps`` > 1 builds the same layers for a sequence of that many inputs in one call,
    with the state carried from step to step and one output per step (batch, timesteps, 1):
    what that many calls of the one-step network give (the serving check uses it: one call
    instead of one per probe value). Initial weights come from Keras' global seed: call
    ``keras.utils.set_random_seed`` first for reproducible training.
    """
    import keras

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if units < 1:
        raise ValueError(f"units must be at least 1, got {units}")
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    inputs = keras.Input(batch_shape=(batch_size, timesteps, 1), dtype=dtype)
    # unroll=True is exact for a single time step and roughly halves training time.
    hidden = keras.layers.LSTM(
        units,
        activation="tanh",
        stateful=True,
        unroll=timesteps == 1,
        return_sequences=timesteps > 1,
        dtype=dtype,
        name=LSTM_LAYER_NAME,
    )(inputs)
    outputs = keras.layers.Dense(1, dtype=dtype, name=DENSE_LAYER_NAME)(hidden)
    return keras.Model(inputs, outputs, name=f"stateful_lstm_b{batch_size}")


def reset_states(model: keras.Model) -> None:
    """Zero the (h, c) state of every stateful layer (Keras 3 has no Model.reset_states)."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def copy_weights(source_weights: list[Any], target: keras.Model) -> None:
    """Copy trained weights (in get_weights() order) into a network of another batch size."""
    current = target.get_weights()
    if len(current) != len(source_weights):
        raise ValueError(f"expected {len(current)} weight arrays, got {len(source_weights)}")
    # Cast to the target's own dtypes: serving may rebuild the network in float64.
    target.set_weights(
        [weight.astype(old.dtype) for weight, old in zip(source_weights, current, strict=True)]
    )
