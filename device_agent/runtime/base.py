"""The runtime interface: one method to implement (:meth:`Runtime._run`); the base class
serialises calls, normalises errors and handles quantized inputs/outputs."""

from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np

from device_agent.errors import AgentError


class RuntimeError_(AgentError):
    """The runtime failed to load or run a model."""


class Runtime:
    """A loaded model. ``run(batch)`` takes a float32 batch shaped ``(n, *sample_shape)`` and
    returns the first output as float32 ``(n, ...)``. Thread-safe (calls are serialised)."""

    name = "runtime"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.input_shape: list[int] = []
        self.input_dtype: Any = np.float32
        self.input_quant: Optional[tuple[float, int]] = None
        self.output_quant: Optional[tuple[float, int]] = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch. Raises RuntimeError_ when the runtime fails."""
        x = batch
        if self.input_quant is not None:
            scale, zp = self.input_quant
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x / scale) + zp, info.min, info.max).astype(self.input_dtype)
        elif x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        try:
            with self.lock:
                y = self._run(x)
        except AgentError:
            raise
        except Exception as exc:  # noqa: BLE001 - third-party errors are normalised here
            raise RuntimeError_(f"{self.name}: inference failed: {exc}") from exc
        if self.output_quant is not None:
            scale, zp = self.output_quant
            return (y.astype(np.float32) - zp) * np.float32(scale)
        return y if y.dtype == np.float32 else y.astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def warm_up(self, sample_shape: list[int], rounds: int = 2) -> None:
        """Run zeros through the model so the first real request is not slow."""
        x = np.zeros([1, *[max(d, 1) for d in sample_shape]], dtype=np.float32)
        for _ in range(rounds):
            self.run(x)

    def close(self) -> None:
        """Release the model."""
