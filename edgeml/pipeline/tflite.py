"""TFLite variants of a Keras model: fp32, dynamic-range, fp16 and full-integer int8.

Keras 3 models go through ``model.export()`` (a SavedModel) and the saved-model converter,
the path that converts correctly on TensorFlow 2.16+. int8 uses representative data from the
training split; its I/O stays float32 unless ``int8_io`` is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeml.errors import ConversionError

TFLITE_QUANTIZATIONS = ("fp32", "dynamic", "fp16", "int8")
REPRESENTATIVE_SAMPLES = 200


def export_saved_model(model: object, out: Path) -> Path:
    """Export a Keras 3 model as a SavedModel for the converters. Raises ConversionError on failure."""
    try:
        model.export(str(out), format="tf_saved_model", verbose=False)  # type: ignore[attr-defined]
    except TypeError:
        model.export(str(out))  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - any exporter failure is a conversion failure
        raise ConversionError(f"exporting the Keras model failed: {exc}") from exc
    return out


def convert(saved_model: Path, quantization: str, x_train: np.ndarray, int8_io: bool = False) -> bytes:
    """Convert the SavedModel to TFLite bytes with one quantization.

    Raises ConversionError if the converter fails (e.g. an op without an int8 kernel).
    """
    import tensorflow as tf

    if quantization not in TFLITE_QUANTIZATIONS:
        raise ConversionError(f"unknown TFLite quantization {quantization!r}")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantization == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: _representative(x_train)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    try:
        return bytes(conv.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"TFLite {quantization} conversion failed: {first}",
            hint="the model may use an op without a quantized kernel; the other variants are still usable",
        ) from exc


def _representative(x_train: np.ndarray) -> Iterator[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    n = min(REPRESENTATIVE_SAMPLES, len(x_train))
    for i in rng.choice(len(x_train), size=n, replace=False):
        yield [x_train[i : i + 1].astype(np.float32)]
