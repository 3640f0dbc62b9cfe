"""Runtime adapters against real LiteRT and onnxruntime; backend choice; no TensorFlow on the device path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agent.agent.model import SelfTestError, load_model
from device_agent.agent.slots import SlotStore
from device_agent.errors import ConfigError
from device_agent.runtime import available_runtimes, choose_backend, load_runtime
from tests.agent.modelkit import golden_inputs, make_manifest, run_litert


def test_litert_matches_bare_interpreter_and_resizes_batches(tiny_models: dict[str, Path]) -> None:
    rt = load_runtime(tiny_models["good1"], "tflite", "auto", 1, [4])
    assert rt.name == "litert"
    x = golden_inputs()
    for batch in (x[:1], x, x[:2], x[:1]):
        assert np.array_equal(rt.run(batch), run_litert(tiny_models["good1"], batch))


def test_onnxruntime_adapter_serves_probabilities(tiny_models: dict[str, Path]) -> None:
    rt = load_runtime(tiny_models["logreg"], "onnx", "auto", 1, [4])
    assert rt.name == "onnxruntime"
    y = rt.run(golden_inputs())
    assert y.shape == (3, 3) and np.allclose(y.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_model_loads_and_self_tests_from_a_slot(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    store = SlotStore(tmp_path)
    manifest = make_manifest(tiny_models["logreg"], version="1.0.0")
    info = store.stage(tiny_models["logreg"], manifest, "tiny", "1.0.0")
    model = load_model(info)
    assert model.runtime.name == "onnxruntime" and model.labels == ["a", "b", "c"]


def test_self_test_failure_names_the_vector(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    store = SlotStore(tmp_path)
    info = store.stage(tiny_models["good1"], make_manifest(tiny_models["good1"], corrupt_golden=True), "tiny", "1")
    with pytest.raises(SelfTestError, match="golden vector 0: max abs difference"):
        load_model(info)
    info = store.stage(tiny_models["good2"], make_manifest(tiny_models["good2"], golden=[]), "tiny", "2")
    with pytest.raises(SelfTestError, match="no golden vectors"):
        load_model(info)
    # a file that is not a model at all
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 10)
    info = store.stage(junk, make_manifest(tiny_models["good1"]), "tiny", "3")
    with pytest.raises(SelfTestError, match="cannot load"):
        load_model(info)


def test_backend_choice() -> None:
    assert "litert" in available_runtimes() and "onnxruntime" in available_runtimes()
    assert choose_backend("tflite") == "litert"
    assert choose_backend("onnx") == "onnxruntime"
    with pytest.raises(ConfigError, match="cannot run onnx"):
        choose_backend("onnx", "litert")
    with pytest.raises(ConfigError, match="not supported"):
        choose_backend("pt")


def test_serving_a_model_never_imports_tensorflow(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(make_manifest(tiny_models["good1"])))
    code = (
        "import sys, json; from pathlib import Path\n"
        "from device_agent.agent.slots import SlotStore\n"
        "from device_agent.agent.model import load_model\n"
        f"s = SlotStore(Path({str(tmp_path / 'slots')!r}))\n"
        f"man = json.loads(Path({str(manifest)!r}).read_text())\n"
        f"i = s.stage(Path({str(tiny_models['good1'])!r}), man, 'tiny', '1')\n"
        "m = load_model(i)\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'sklearn', 'pandas', 'click', 'edgeml')]\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
