"""Tiny real TFLite models and manifests for the agent tests (built once with TensorFlow in a
subprocess, cached in pytest's cache folder keyed by this file's content)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 4
LABELS = ["a", "b", "c"]

_BUILD = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, keras
out = sys.argv[1]

def convert(model, name):
    d = os.path.join(out, name + "-export")
    model.export(d, verbose=False)
    data = tf.lite.TFLiteConverter.from_saved_model(d).convert()
    with open(os.path.join(out, name + ".tflite"), "wb") as f:
        f.write(data)

def dense(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, activation="relu")(inp)
    return inp, keras.layers.Dense(3)(h)

for seed in (1, 2, 3):
    inp, logits = dense(seed)
    convert(keras.Model(inp, keras.layers.Softmax()(logits)), f"good{seed}")

# NaN whenever the first feature is negative; golden vectors use positive ones
inp, logits = dense(4)
probs = keras.layers.Softmax()(logits)
gate = keras.layers.Lambda(lambda t: keras.ops.sqrt(t[:, :1]) * 0.0)(inp)
convert(keras.Model(inp, keras.layers.Add()([probs, gate])), "nan_when_negative")

# ~1 MB of weights: a download of many chunks
keras.utils.set_random_seed(5)
inp = keras.Input((4,), name="x")
h = keras.layers.Dense(512, activation="relu")(inp)
h = keras.layers.Dense(512, activation="relu")(h)
convert(keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h)), "big")

# an ONNX classifier (scikit-learn -> skl2onnx): outputs label and probabilities
from sklearn.linear_model import LogisticRegression
from skl2onnx import to_onnx
rng = np.random.default_rng(0)
X = rng.uniform(0, 1, (300, 4)).astype(np.float32)
y = (X[:, 0] * 3).astype(int).clip(0, 2)
clf = LogisticRegression(max_iter=500).fit(X, y)
onx = to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
with open(os.path.join(out, "logreg.onnx"), "wb") as f:
    f.write(onx.SerializeToString())
"""


def build_models(cache_dir: Path) -> dict[str, Path]:
    """Build (or reuse) the models. Returns name -> .tflite path."""
    key = hashlib.sha256(_BUILD.encode()).hexdigest()[:12]
    out = Path(cache_dir) / f"agent-models-{key}"
    names = ["good1", "good2", "good3", "nan_when_negative", "big", "logreg"]
    paths = {n: out / f"{n}.tflite" for n in names}
    paths["logreg"] = out / "logreg.onnx"
    if not all(p.exists() for p in paths.values()):
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", _BUILD, str(out)], check=True, timeout=300)
    return paths


def golden_inputs() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(0.1, 1.0, size=(3, N_FEATURES)).astype(np.float32)


def reference_profile() -> dict[str, Any]:
    edges = [0.25, 0.5, 0.75]
    return {
        "features": [{"name": f"f{i}", "edges": edges, "freqs": [0.25, 0.25, 0.25, 0.25]} for i in range(N_FEATURES)],
        "classes": {k: 1 / 3 for k in LABELS},
        "confidence_edges": [],
        "confidence_freqs": [],
        "feature_kind": "raw",
        "pooling": None,
    }


def run_litert(path: Path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(["probabilities"], {sess.get_inputs()[0].name: x.astype(np.float32)})[0]  # type: ignore[no-any-return]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    inp = it.get_input_details()[0]["index"]
    it.resize_tensor_input(inp, list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp, x.astype(np.float32))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])  # type: ignore[no-any-return]


def make_manifest(
    path: Path, name: str = "tiny", version: str = "0.0.0", corrupt_golden: bool = False, **extra: Any
) -> dict[str, Any]:
    """A ModelManifest dict for a model built here, golden vectors recomputed in LiteRT."""
    x = golden_inputs()
    golden = []
    for row in x:
        y = run_litert(path, row[None, :])[0]
        if corrupt_golden:
            y = y[::-1] + 0.25
        golden.append({"input": row.tolist(), "output": y.tolist()})
    manifest = {
        "schema": "manifest/1.0",
        "name": name,
        "version": version,
        "format": "onnx" if path.suffix == ".onnx" else "tflite",
        "quantization": "fp32",
        "filename": path.name,
        "task": "classification",
        "inputs": [{"name": "x", "shape": [-1, N_FEATURES], "dtype": "float32"}],
        "outputs": [{"name": "probs", "shape": [-1, len(LABELS)], "dtype": "float32"}],
        "labels": list(LABELS),
        "preprocessing": {"feature_names": [f"f{i}" for i in range(N_FEATURES)], "layout": "tabular"},
        "reference": reference_profile(),
        "golden": golden,
        "golden_atol": 1e-4,
        "latency_budget_ms": 50.0,
        "metrics": {},
        "lineage": {"test": True},
    }
    manifest.update(extra)
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    out = path.with_suffix(".manifest.json")
    out.write_text(json.dumps(manifest))
    return out
