"""Run a variant in the runtime a device uses — LiteRT or onnxruntime — on the host, never TensorFlow.

A :class:`Runner` loads a model file with one thread and runs batch-1 inference; quantized
(int8/uint8) TFLite inputs and outputs are (de)quantized with the tensor's scale and zero point.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.protocol import TensorSpec
from edgeml.errors import ConversionError

_DTYPES = {
    np.dtype("float32"): "float32",
    np.dtype("float16"): "float16",
    np.dtype("int8"): "int8",
    np.dtype("uint8"): "uint8",
    np.dtype("int32"): "int32",
    np.dtype("int64"): "int64",
}


class Runner:
    """One loaded model. ``predict(x)`` takes a float32 batch of one sample; ``load_ms`` is the load time."""

    load_ms: float
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def prepare(self, x: np.ndarray) -> Any:
        """Convert a float batch to what the runtime takes (quantized for int8 inputs)."""
        return np.asarray(x, dtype=np.float32)

    def run(self, prepared: Any) -> np.ndarray:  # pragma: no cover - interface
        """Run the runtime on a prepared batch; returns the raw output tensor."""
        raise NotImplementedError

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Raw output -> float32 probabilities (dequantized for int8 outputs)."""
        return np.asarray(raw, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float32 outputs for a float batch."""
        return self.finish(self.run(self.prepare(x)))

    def predict_all(self, x: np.ndarray) -> np.ndarray:
        """Outputs for every sample, fed one at a time (batch 1, as on a device)."""
        return np.concatenate([self.predict(x[i : i + 1]) for i in range(len(x))], axis=0)

    def latency(self, x: np.ndarray, runs: int = 200, warmup: int = 20) -> tuple[float, float]:
        """(p50, p95) latency in ms of batch-1 inference after ``warmup`` runs, cycling through ``x``.

        Timed: feeding the input, invoking the runtime and reading the output (input quantization
        for int8-I/O models is done before the clock starts, as a sensor would deliver int8)."""
        n = len(x)
        samples = [self.prepare(x[i : i + 1]) for i in range(min(n, 64))]
        for i in range(warmup):
            self.run(samples[i % len(samples)])
        times = np.empty(runs)
        for i in range(runs):
            sample = samples[i % len(samples)]
            t0 = time.perf_counter()
            self.run(sample)
            times[i] = (time.perf_counter() - t0) * 1000.0
        return float(np.percentile(times, 50)), float(np.percentile(times, 95))


class LiteRTRunner(Runner):
    """A ``.tflite`` model in the ai-edge-litert interpreter with one thread."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        t0 = time.perf_counter()
        try:
            self._interp = Interpreter(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ConversionError(f"LiteRT cannot load {path.name}: {exc}") from exc
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.inputs = [_spec(d) for d in self._interp.get_input_details()]
        self.outputs = [_spec(d) for d in self._interp.get_output_details()]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        d = self._in
        value = np.asarray(x, dtype=np.float32)
        if d["dtype"] in (np.int8, np.uint8):
            scale, zero = d["quantization"]
            info = np.iinfo(d["dtype"])
            return np.asarray(np.clip(np.round(value / scale + zero), info.min, info.max), dtype=d["dtype"])
        return value

    def run(self, prepared: np.ndarray) -> np.ndarray:
        d = self._in
        if tuple(d["shape"]) != prepared.shape:
            self._interp.resize_tensor_input(d["index"], list(prepared.shape))
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()[0]
            self._out = self._interp.get_output_details()[0]
            d = self._in
        self._interp.set_tensor(d["index"], prepared)
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out["index"]))

    def finish(self, out: np.ndarray) -> np.ndarray:
        if self._out["dtype"] in (np.int8, np.uint8):
            scale, zero = self._out["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return np.asarray(out, dtype=np.float32)


class OnnxRunner(Runner):
    """An ``.onnx`` model in onnxruntime (CPU provider, one intra-op and one inter-op thread)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        t0 = time.perf_counter()
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ConversionError(f"onnxruntime cannot load {path.name}: {exc}") from exc
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self._in_name = self._sess.get_inputs()[0].name
        self._out_name = self._sess.get_outputs()[0].name
        self.inputs = [_ort_spec(i) for i in self._sess.get_inputs()]
        self.outputs = [_ort_spec(o) for o in self._sess.get_outputs()]

    def run(self, prepared: np.ndarray) -> np.ndarray:
        return np.asarray(self._sess.run([self._out_name], {self._in_name: prepared})[0])


def open_runner(path: Path, threads: int = 1) -> Runner:
    """A runner for ``path`` chosen by its suffix (.tflite -> LiteRT, .onnx -> onnxruntime)."""
    if path.suffix == ".tflite":
        return LiteRTRunner(path, threads)
    if path.suffix == ".onnx":
        return OnnxRunner(path, threads)
    raise ConversionError(f"no runtime for {path.name}")


def _spec(d: dict[str, Any]) -> TensorSpec:
    sig = d.get("shape_signature")
    shape = [int(v) for v in (sig if sig is not None and len(sig) else d["shape"])]
    if shape:
        shape[0] = -1
    dtype = _DTYPES.get(np.dtype(d["dtype"]), "float32")
    scale, zero = d.get("quantization", (0.0, 0))
    if dtype in ("int8", "uint8") and scale:
        return TensorSpec(d["name"], shape, dtype, float(scale), int(zero))
    return TensorSpec(d["name"], shape, dtype)


def _ort_spec(arg: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) else -1 for d in arg.shape]
    if shape:
        shape[0] = -1
    dtype = {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(int64)": "int64",
        "tensor(int8)": "int8",
        "tensor(uint8)": "uint8",
        "tensor(int32)": "int32",
    }.get(arg.type, "float32")
    return TensorSpec(arg.name, shape, dtype)
