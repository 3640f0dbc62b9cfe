"""Tabular MLP: in-graph normalisation of raw features, two small dense layers, softmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.registry import Recipe


def build(input_shape: tuple[int, ...], n_classes: int, x_train: np.ndarray, params: dict[str, Any]) -> Any:
    """A compiled Keras MLP whose Normalization layer is adapted to ``x_train`` (per feature)."""
    import keras

    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x_train.astype("float32"))
    inputs = keras.Input(shape=input_shape, name="input")
    h = norm(inputs)
    if len(input_shape) > 1:
        h = keras.layers.Flatten()(h)
    for i, units in enumerate(params["hidden"]):
        h = keras.layers.Dense(int(units), activation="relu", name=f"dense_{i}")(h)
        if params["dropout"]:
            h = keras.layers.Dropout(float(params["dropout"]))(h)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(h)
    model = keras.Model(inputs, outputs, name="mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


RECIPE = Recipe(
    name="mlp",
    framework="keras",
    inputs="tabular",
    summary="dense 64-32 with in-graph normalisation",
    build=build,
    defaults={"hidden": [64, 32], "dropout": 0.1, "learning_rate": 3e-3, "epochs": 60, "batch_size": 32, "patience": 8},
)
