"""Small CNN for 8x8x1 images (digits): normalise raw pixels in the graph, two conv blocks, softmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.registry import Recipe


def build(input_shape: tuple[int, ...], n_classes: int, x_train: np.ndarray, params: dict[str, Any]) -> Any:
    """A compiled Keras CNN; its Normalization layer (one mean/variance over all pixels) is adapted to ``x_train``."""
    import keras

    norm = keras.layers.Normalization(axis=None, name="normalize")
    norm.adapt(x_train.astype("float32"))
    inputs = keras.Input(shape=input_shape, name="input")
    h = norm(inputs)
    h = keras.layers.Conv2D(int(params["filters"]), 3, padding="same", activation="relu", name="conv_0")(h)
    h = keras.layers.Conv2D(int(params["filters"]) * 2, 3, padding="same", activation="relu", name="conv_1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(int(params["dense"]), activation="relu", name="dense")(h)
    if params["dropout"]:
        h = keras.layers.Dropout(float(params["dropout"]))(h)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(h)
    model = keras.Model(inputs, outputs, name="cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


RECIPE = Recipe(
    name="cnn",
    framework="keras",
    inputs="image",
    summary="conv 16-32 + maxpool + dense 64 for 8x8x1 images",
    build=build,
    defaults={
        "filters": 16,
        "dense": 64,
        "dropout": 0.1,
        "learning_rate": 3e-3,
        "epochs": 30,
        "batch_size": 32,
        "patience": 6,
    },
)
