"""A model loaded from a slot: its manifest, runtime, and the golden-vector self-test."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from device_agent.agent.slots import SlotInfo
from device_agent.errors import AgentError, DataError, SchemaError
from device_agent.protocol.manifest import ModelManifest, TensorSpec
from device_agent.runtime import Runtime, load_runtime
from device_agent.serving.inputs import InputError, check_batch

RuntimeWrapper = Callable[[Runtime, ModelManifest], Runtime]


class SelfTestError(DataError):
    """The model did not reproduce its golden vectors (or could not be loaded)."""


@dataclass
class LoadedModel:
    """A verified slot, loaded and self-tested, ready to serve."""

    slot: SlotInfo
    manifest: ModelManifest
    runtime: Runtime
    labels: list[str] = field(default_factory=list)
    load_ms: float = 0.0

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def version(self) -> str:
        return self.slot.version

    @property
    def spec(self) -> TensorSpec:
        return self.manifest.inputs[0]

    def __post_init__(self) -> None:
        self.classify = self.manifest.task == "classification"
        self.sample_shape: tuple[int, ...] = tuple(max(d, 1) for d in self.manifest.inputs[0].sample_shape)

    def close(self) -> None:
        self.runtime.close()


def parse_manifest(data: dict[str, Any]) -> ModelManifest:
    """Raises SchemaError when the manifest is not usable."""
    if "schema" not in data:
        data = {**data, "schema": ModelManifest.schema_tag()}
    return ModelManifest.from_dict(data)


def self_test(model: LoadedModel) -> None:
    """Run the manifest's golden vectors; raise SelfTestError naming the first mismatch."""
    golden = model.manifest.golden
    if not golden:
        raise SelfTestError(
            f"{model.name} {model.version}: the manifest has no golden vectors, so the model cannot be self-tested",
            hint="publish the variant with its golden vectors (edgeml convert writes them)",
        )
    atol = float(model.manifest.golden_atol)
    for i, g in enumerate(golden):
        try:
            x, _ = check_batch(np.asarray(g.input, dtype=np.float64), model.spec, max(64, len(g.input)))
        except (InputError, ValueError, TypeError) as exc:
            raise SelfTestError(f"golden vector {i}: input does not fit the model input ({exc})") from exc
        try:
            y = model.runtime.run(x)
        except AgentError as exc:
            raise SelfTestError(f"golden vector {i}: the runtime failed ({exc.message})") from exc
        except Exception as exc:  # noqa: BLE001 - any runtime failure is a failed self-test
            raise SelfTestError(f"golden vector {i}: the runtime failed ({exc})") from exc
        try:
            want = np.asarray(g.output, dtype=np.float64).reshape(y.shape)
        except ValueError as exc:
            raise SelfTestError(
                f"golden vector {i}: expected output of {np.size(g.output)} values, the model gave {y.size}"
            ) from exc
        if not np.isfinite(y).all():
            raise SelfTestError(f"golden vector {i}: the model produced NaN or infinite outputs")
        diff = float(np.max(np.abs(y.astype(np.float64) - want))) if y.size else 0.0
        if not diff <= atol or math.isnan(diff):
            raise SelfTestError(
                f"golden vector {i}: max abs difference {diff:.3g} exceeds the tolerance {atol:.3g}",
                hint="the model file does not behave as it did on the workstation; it is not served",
            )


def load_model(
    slot: SlotInfo,
    runtime_choice: str = "auto",
    threads: int = 1,
    wrapper: Optional[RuntimeWrapper] = None,
) -> LoadedModel:
    """Load a verified slot into a runtime, warm it up and self-test it.
    Raises SelfTestError (or ConfigError when no runtime fits the format)."""
    import time

    t0 = time.perf_counter()
    try:
        manifest = parse_manifest(slot.manifest)
    except SchemaError as exc:
        raise SelfTestError(f"{slot.name} {slot.version}: manifest unusable: {exc.message}") from exc
    try:
        rt = load_runtime(slot.model_path, manifest.format, runtime_choice, threads, manifest.inputs[0].sample_shape)
    except AgentError as exc:
        if exc.__class__.__name__ == "ConfigError":
            raise
        raise SelfTestError(f"{slot.name} {slot.version}: cannot load: {exc.message}") from exc
    if wrapper is not None:
        rt = wrapper(rt, manifest)
    model = LoadedModel(slot, manifest, rt, list(manifest.labels))
    try:
        self_test(model)
    except BaseException:
        model.close()
        raise
    model.load_ms = (time.perf_counter() - t0) * 1000
    return model
