"""The simulator's pure parts: fault specs, the faulty runtime wrapper, traffic data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from device_agent.protocol import FeatureProfile, GoldenVector, ModelManifest, ReferenceProfile, TensorSpec
from edgeml.errors import UsageError
from edgeml.fleet.simulator import DeviceFault, FaultSpec, FaultyRuntime, load_rows, reference_rows


class Inner:
    def __init__(self) -> None:
        self.closed = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (batch.shape[0], 1))

    def close(self) -> None:
        self.closed = True


def manifest() -> ModelManifest:
    ref = ReferenceProfile([FeatureProfile(f"f{i}", [0.25, 0.5, 0.75], [0.1, 0.2, 0.3, 0.4]) for i in range(2)])
    return ModelManifest(name="m", version="3.0.0", inputs=[TensorSpec("x", [-1, 2])],
                         outputs=[TensorSpec("y", [-1, 3])], reference=ref,
                         golden=[GoldenVector([0.5, 0.5], [0.7, 0.2, 0.1])])


def test_specs_parse_and_refuse() -> None:
    assert FaultSpec.parse("3.0.0:latency_x=3,nan=0.1") == FaultSpec("3.0.0", {"latency_x": 3.0, "nan": 0.1})
    assert DeviceFault.parse("0.25:input_shift=1.5").knobs == {"input_shift": 1.5}
    for bad in ("3.0.0", "3.0.0:", "3.0.0:slow=2", "3.0.0:nan=x"):
        with pytest.raises(UsageError):
            FaultSpec.parse(bad)
    for bad in ("2:flaky=1", "x:flaky=1", "0.5:nan=1"):
        with pytest.raises(UsageError):
            DeviceFault.parse(bad)


def test_faulty_runtime_shifts_and_slows_but_passes_golden_inputs() -> None:
    inner = Inner()
    rt = FaultyRuntime(inner, manifest(), {"shift": 1, "latency_ms": 20})
    golden = rt.run(np.array([[0.5, 0.5]], dtype=np.float32))
    assert golden.argmax() == 0  # untouched: the self-test passes
    t0 = time.perf_counter()
    y = rt.run(np.array([[0.1, 0.9]], dtype=np.float32))
    assert time.perf_counter() - t0 >= 0.019
    assert y.argmax() == 1  # the classes rotated: drifted predictions
    nan = FaultyRuntime(inner, manifest(), {"nan": 1.0}).run(np.zeros((2, 2), dtype=np.float32))
    assert np.isnan(nan).all()
    with pytest.raises(RuntimeError):
        FaultyRuntime(inner, manifest(), {"error": 1.0}).run(np.zeros((1, 2), dtype=np.float32))
    base = FaultyRuntime(inner, manifest(), {"device_ms": 5, "latency_x": 3})
    t0 = time.perf_counter()
    base.run(np.zeros((1, 2), dtype=np.float32))
    assert 0.014 <= time.perf_counter() - t0 < 0.1  # 5 ms board time, three times slower
    base.close()
    assert inner.closed


def test_traffic_rows_from_npz_train_and_convert_folders(tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.mkdir()
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(train / "data.npz", x_train=x * 0, x_test=x)
    conv = tmp_path / "conv"
    conv.mkdir()
    (conv / "report.json").write_text(json.dumps({"model_dir": str(train)}))
    for src in (train / "data.npz", train, conv):
        assert np.array_equal(load_rows(src), x)  # type: ignore[arg-type]
    assert load_rows(None) is None
    with pytest.raises(UsageError):
        load_rows(tmp_path)
    rows = reference_rows(manifest(), 4000, np.random.default_rng(0))
    assert rows.shape == (4000, 2)
    top = (rows[:, 0] > 0.75).mean()
    assert 0.35 < top < 0.45  # the reference says 40 % of values sit in the top bin
