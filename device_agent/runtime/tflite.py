"""TFLite adapter for ``ai_edge_litert``, ``tflite_runtime`` and (last fallback) ``tensorflow.lite``.

The interpreter module is imported lazily: TensorFlow only when neither LiteRT nor tflite_runtime
is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device_agent.runtime.base import Runtime, RuntimeError_

BACKENDS = ("litert", "tflite_runtime", "tensorflow")


def interpreter_class(backend: str) -> Any:
    """The Interpreter class of ``backend``. Raises ImportError when it is not installed."""
    if backend == "litert":
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    if backend == "tflite_runtime":
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found,unused-ignore]

        return Interpreter
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: F401 - last fallback only

        return tf.lite.Interpreter
    raise ImportError(f"unknown TFLite backend {backend!r}")


class TFLiteRuntime(Runtime):
    """One TFLite interpreter; resizes the batch dimension on demand."""

    def __init__(self, path: Path, backend: str, threads: int = 1) -> None:
        super().__init__()
        self.name = backend
        cls = interpreter_class(backend)
        try:
            self.interp = cls(model_path=str(path), num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            raise RuntimeError_(f"{backend}: cannot load {path.name}: {exc}") from exc
        inp = self.interp.get_input_details()[0]
        out = self.interp.get_output_details()[0]
        self._in_index = inp["index"]
        self._out_index = out["index"]
        self.input_shape = [int(d) for d in inp["shape"]]
        self._batch = self.input_shape[0] if self.input_shape else 1
        self.input_dtype = inp["dtype"]
        scale, zp = inp.get("quantization", (0.0, 0))
        if np.dtype(self.input_dtype).kind in "iu" and scale:
            self.input_quant = (float(scale), int(zp))
        oscale, ozp = out.get("quantization", (0.0, 0))
        if np.dtype(out["dtype"]).kind in "iu" and oscale:
            self.output_quant = (float(oscale), int(ozp))
        self._plain = self.input_quant is None and self.output_quant is None and out["dtype"] == np.float32

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Fast path for float32 models (no quantization, no dtype change): one call less."""
        if self._plain and batch.dtype == self.input_dtype:
            interp = self.interp
            try:
                with self.lock:
                    # the batch size is read under the lock: another thread may have resized the input
                    if batch.shape[0] == self._batch:
                        interp.set_tensor(self._in_index, batch)
                        interp.invoke()
                        return interp.get_tensor(self._out_index)  # type: ignore[no-any-return]
            except Exception as exc:  # noqa: BLE001 - normalised like Runtime.run
                raise RuntimeError_(f"{self.name}: inference failed: {exc}") from exc
        return super().run(batch)

    def _run(self, x: np.ndarray) -> np.ndarray:
        interp = self.interp
        if x.shape[0] != self._batch:
            interp.resize_tensor_input(self._in_index, list(x.shape))
            interp.allocate_tensors()
            self._batch = x.shape[0]
        interp.set_tensor(self._in_index, x)
        interp.invoke()
        return interp.get_tensor(self._out_index)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.interp = None
