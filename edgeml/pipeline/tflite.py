"""TFLite variants of a Keras model: fp32, dynamic-range, fp16 and full-integer int8.

Keras 3 models go through ``model.export()`` (a SavedModel) and the saved-model converter,
the path that converts correctly on TensorFlow 2.16+. int8 uses representative data from the
training split; its I/O stays float32 unless ``int8_io`` is asked for.

The int8 variant keeps the in-graph normalisation (the ``normalize`` layer: one SUB/MUL) in
float and quantizes everything after it: with raw tabular features on very different scales
(breast_cancer: 0.05 .. 2500), one int8 scale for the raw input tensor wipes out the small
features (measured: 35 pp accuracy drop), while after normalisation one scale fits all. The
``int8_io`` variant is strictly integer end to end (the input is quantized raw), which suits
image data whose pixels share one range.
"""

from __future__ import annotations

import warnings
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
        else:
            float_nodes = preprocessing_nodes(saved_model)
            if float_nodes:
                return _int8_float_preprocessing(conv, float_nodes, x_train)
    try:
        return bytes(conv.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"TFLite {quantization} conversion failed: {first}",
            hint="the model may use an op without a quantized kernel; the other variants are still usable",
        ) from exc


def preprocessing_nodes(saved_model: Path) -> list[str]:
    """Output tensor names of the ops of the ``normalize`` layer in the fp32 TFLite graph."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    fp32 = tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()
    interp = Interpreter(model_content=fp32)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return [
        names[o] for op in interp._get_ops_details() for o in op["outputs"] if o in names and "/normalize" in names[o]
    ]


def _int8_float_preprocessing(conv: object, float_nodes: list[str], x_train: np.ndarray) -> bytes:
    """int8 conversion with ``float_nodes`` left in float (QuantizationDebugger denylist)."""
    import tensorflow as tf

    conv.target_spec.supported_ops = [  # type: ignore[attr-defined]
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    try:
        with warnings.catch_warnings():  # the debugger uses the deprecated tf.lite.Interpreter internally
            warnings.simplefilter("ignore")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=conv,
                debug_dataset=lambda: _representative(x_train, 50),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes),
            )
            return bytes(debugger.get_nondebug_quantized_model())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"TFLite int8 conversion failed: {first}") from exc


def _representative(x_train: np.ndarray, limit: int = REPRESENTATIVE_SAMPLES) -> Iterator[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    n = min(limit, len(x_train))
    for i in rng.choice(len(x_train), size=n, replace=False):
        yield [x_train[i : i + 1].astype(np.float32)]
