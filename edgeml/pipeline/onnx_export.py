"""ONNX variants: fp32 (tf2onnx for Keras, skl2onnx for scikit-learn), int8 dynamic and int8 static QDQ.

Every ONNX variant has one float32 input ``input`` (batch dimension free) and one float32
output: the class probabilities. scikit-learn graphs lose their ``label`` output so devices see
the same contract for every model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import ConversionError

ONNX_QUANTIZATIONS = ("fp32", "int8-dynamic", "int8-qdq")
OPSET = 15
QUANTIZABLE_OPS = {"Conv", "MatMul", "Gemm"}
CALIBRATION_SAMPLES = 200


def keras_to_onnx(saved_model: Path) -> bytes:
    """fp32 ONNX of a Keras 3 model from its exported SavedModel (``serving_default`` signature).

    Goes through the frozen graph: ``tf2onnx.convert.from_keras`` fails on Keras 3, and
    ``from_function`` leaves the Normalization constants as graph inputs. Raises ConversionError.
    """
    import tf2onnx
    from tf2onnx import tf_loader

    try:
        graph_def, inputs, outputs = tf_loader.from_saved_model(
            str(saved_model), None, None, tag="serve", signatures=["serving_default"]
        )
        proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=OPSET)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"Keras -> ONNX conversion failed: {exc}") from exc
    _rename_io(proto, "input", "probabilities")
    return bytes(proto.SerializeToString())


def sklearn_to_onnx(model: Any, n_features: int) -> bytes:
    """fp32 ONNX of a fitted scikit-learn classifier (probabilities only). Raises ConversionError."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    try:
        proto = convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            options={id(model): {"zipmap": False}},
            target_opset={"": OPSET, "ai.onnx.ml": 3},
        )
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"scikit-learn -> ONNX conversion failed: {exc}") from exc
    keep = [o for o in proto.graph.output if "prob" in o.name]
    if not keep:
        raise ConversionError("the scikit-learn ONNX graph has no probabilities output")
    while len(proto.graph.output):
        proto.graph.output.pop()
    proto.graph.output.extend(keep[:1])
    _rename_io(proto, "input", "probabilities")
    return bytes(proto.SerializeToString())


def quantizable_ops(onnx_bytes: bytes) -> set[str]:
    """The op types in the graph that onnxruntime's int8 quantizers act on."""
    import onnx

    return {n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node} & QUANTIZABLE_OPS


def quantize_dynamic(onnx_bytes: bytes) -> bytes:
    """int8 dynamic quantization (weights int8, activations quantized at run time). Raises ConversionError."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as qd

    ops = quantizable_ops(onnx_bytes)
    if not ops:
        raise ConversionError("no MatMul/Gemm/Conv operator to quantize")
    # ConvInteger has no int8-weight kernel in onnxruntime's CPU provider: quantize the dense ops only.
    op_types = sorted(ops - {"Conv"}) or None
    if op_types is None:
        raise ConversionError("only Conv operators, which onnxruntime cannot run dynamically quantized")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(onnx_bytes)
        try:
            qd(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=op_types)
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"onnxruntime dynamic quantization failed: {exc}") from exc
        return dst.read_bytes()


def quantize_static_qdq(onnx_bytes: bytes, calibration: np.ndarray, per_channel: bool) -> bytes:
    """int8 static quantization in QDQ format with calibration data (per-channel weights if asked).

    The in-graph normalisation nodes (``normalize`` layer) stay float, as in the TFLite int8
    variant: raw features on different scales do not share one int8 scale well.
    Raises ConversionError when the graph has nothing to quantize or the quantizer fails.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not quantizable_ops(onnx_bytes):
        raise ConversionError("no MatMul/Gemm/Conv operator to quantize")

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, x: np.ndarray) -> None:
            self._it = iter([{"input": x[i : i + 1].astype(np.float32)} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    rng = np.random.default_rng(0)
    n = min(CALIBRATION_SAMPLES, len(calibration))
    sample = calibration[rng.choice(len(calibration), size=n, replace=False)]
    import onnx

    exclude = [n.name for n in onnx.load_from_string(onnx_bytes).graph.node if "/normalize" in n.name]
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp) / "in.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(onnx_bytes)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the original
            pre = src
        try:
            quantize_static(
                str(pre),
                str(dst),
                Reader(sample),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
            )
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"onnxruntime static QDQ quantization failed: {exc}") from exc
        return dst.read_bytes()


def _rename_io(proto: Any, input_name: str, output_name: str) -> None:
    """Give the graph's single input/output stable names, rewriting every reference."""
    graph = proto.graph
    renames = {}
    real_inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(real_inputs) == 1 and real_inputs[0].name != input_name:
        renames[real_inputs[0].name] = input_name
        real_inputs[0].name = input_name
    if len(graph.output) == 1 and graph.output[0].name != output_name:
        renames[graph.output[0].name] = output_name
        graph.output[0].name = output_name
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
