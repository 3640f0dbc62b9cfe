"""Inference runtimes behind one small interface (:class:`Runtime`).

:func:`load_runtime` picks an adapter for the model's format: TFLite models run on
``ai_edge_litert``, else ``tflite_runtime``, else (last fallback, imported only then)
``tensorflow.lite``; ONNX models on ``onnxruntime``. The model is warmed up on load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from device_agent.errors import ConfigError
from device_agent.runtime.base import Runtime, RuntimeError_

__all__ = ["Runtime", "RuntimeError_", "available_runtimes", "load_runtime"]

_MODULES = {
    "litert": "ai_edge_litert",
    "tflite_runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
    "onnxruntime": "onnxruntime",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_runtimes() -> list[str]:
    """Runtimes whose module is installed (checked without importing them)."""
    return [name for name, mod in _MODULES.items() if _installed(mod)]


def choose_backend(fmt: str, choice: str = "auto") -> str:
    """The backend to load a ``fmt`` model with. Raises ConfigError when none fits."""
    if fmt == "onnx":
        candidates = ["onnxruntime"]
    elif fmt == "tflite":
        candidates = ["litert", "tflite_runtime", "tensorflow"]
    else:
        raise ConfigError(f"model format {fmt!r} is not supported", hint="publish a tflite or onnx variant")
    if choice != "auto":
        if choice not in candidates:
            raise ConfigError(
                f"runtime {choice!r} cannot run {fmt} models",
                hint=f'use runtime = "auto" or one of {", ".join(candidates)}',
            )
        candidates = [choice]
    for name in candidates:
        if _installed(_MODULES[name]):
            return name
    raise ConfigError(
        f"no runtime for {fmt} models is installed (tried {', '.join(candidates)})",
        hint="pip install ai-edge-litert (tflite) or onnxruntime (onnx)",
    )


def load_runtime(
    path: Path, fmt: str, choice: str = "auto", threads: int = 1, sample_shape: Optional[list[int]] = None
) -> Runtime:
    """Load and warm up a model. Raises ConfigError (no suitable runtime) or RuntimeError_."""
    backend = choose_backend(fmt, choice)
    rt: Runtime
    if backend == "onnxruntime":
        from device_agent.runtime.onnx import OnnxRuntime

        rt = OnnxRuntime(Path(path), threads)
    else:
        from device_agent.runtime.tflite import TFLiteRuntime

        rt = TFLiteRuntime(Path(path), backend, threads)
    rt.warm_up(sample_shape if sample_shape is not None else rt.input_shape[1:])
    return rt
