"""onnxruntime adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device_agent.runtime.base import Runtime, RuntimeError_

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


class OnnxRuntime(Runtime):
    """An onnxruntime InferenceSession on the CPU."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise RuntimeError_(f"onnxruntime: cannot load {path.name}: {exc}") from exc
        inp = self.session.get_inputs()[0]
        self._in_name = inp.name
        outputs = self.session.get_outputs()
        # classifiers exported from scikit-learn give (label, probabilities): serve the float output
        floats = [o for o in outputs if o.type in ("tensor(float)", "tensor(float16)")]
        self._out_name = (floats or outputs)[0].name
        self.input_shape = [d if isinstance(d, int) else -1 for d in inp.shape]
        self.input_dtype = _DTYPES.get(inp.type, np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._out_name], {self._in_name: x})[0]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.session = None
