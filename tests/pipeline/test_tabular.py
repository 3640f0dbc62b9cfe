"""Tabular paths end to end: breast_cancer with the MLP (TFLite + ONNX) and with random_forest
(scikit-learn -> ONNX), a CSV with a categorical column and missing values, and seeded determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agent.protocol import ModelManifest
from device_agent.protocol.features import encode_records
from edgeml.pipeline.convert import convert
from edgeml.pipeline.runtimes import open_runner
from edgeml.pipeline.train import train
from tests.pipeline.csvdata import write_sensor_csv

pytestmark = pytest.mark.slow
EDGEML = [sys.executable, "-m", "edgeml"]
SMALL_GRID = {"n_estimators": [20, 40], "max_depth": [None, 6], "min_samples_split": [2]}


def test_breast_cancer_mlp_via_cli_json(tmp_path: Path) -> None:
    m, c = tmp_path / "m", tmp_path / "c"
    subprocess.run(
        [*EDGEML, "train", "--dataset", "breast_cancer", "--out", str(m), "-p", "epochs=25", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    proc = subprocess.run(
        [*EDGEML, "convert", str(m), "--out", str(c), "--latency-runs", "50", "--int8-io", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(proc.stdout)  # --json: stdout is exactly the report
    assert report == json.loads((c / "report.json").read_text())
    formats = [v["format"] for v in report["variants"]]
    assert formats.count("tflite") >= 4 and formats.count("onnx") >= 2
    chosen = next(v for v in report["variants"] if v["name"] == report["selected"])
    assert chosen["accuracy_drop"] <= 0.01 and report["selection"]["within_budget"]
    # int8 keeps the normalisation in float, so raw features of very different scales survive
    int8 = next(v for v in report["variants"] if v["name"] == "tflite-int8")
    assert int8["accuracy_drop"] <= 0.01
    # ...whereas the strictly integer variant quantizes the raw input with one scale and loses accuracy
    strict = next(v for v in report["variants"] if v["name"] == "tflite-int8-io")
    assert strict["accuracy_drop"] > 0.05 and "over-accuracy-budget" in strict["flags"]
    assert "exceeds" in strict["rejected_because"]
    assert report["trained"]["accuracy"] > 0.9
    metrics = json.loads((m / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "roc_auc", "confusion_matrix", "per_class"} <= set(metrics)
    assert np.asarray(metrics["confusion_matrix"]).sum() == report["measured"]["test_rows"]


def test_breast_cancer_random_forest_onnx_path(tmp_path: Path) -> None:
    summary = train("breast_cancer", tmp_path / "m", recipe="random_forest", params={"grid": SMALL_GRID})
    assert set(summary["fit"]["best_params"]) == set(SMALL_GRID)
    report = convert(tmp_path / "m", tmp_path / "c", latency_runs=50)
    assert [v["name"] for v in report["variants"]] == ["onnx-fp32"]
    assert report["selected"] == "onnx-fp32"
    row = report["variants"][0]
    assert row["agreement"] >= 0.99 and row["max_abs_diff"] < 1e-4 and row["accuracy_drop"] <= 0.01
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"onnx-int8-dynamic", "onnx-int8-qdq"}
    assert all("no MatMul/Gemm/Conv" in r for r in skipped.values())
    m = ModelManifest.from_json((tmp_path / "c" / row["manifest"]).read_bytes())
    assert m.format == "onnx" and [o.name for o in m.outputs] == ["probabilities"] and m.outputs[0].shape == [-1, 2]
    assert m.reference.feature_kind == "raw" and len(m.reference.features) == 30


def test_csv_with_categorical_and_missing_values(tmp_path: Path) -> None:
    csv = write_sensor_csv(tmp_path / "sensors.csv")
    summary = train(str(csv), tmp_path / "m", target="state", params={"epochs": 40})
    assert any("one-hot" in w for w in summary["warnings"]) and any("imputed" in w for w in summary["warnings"])
    report = convert(tmp_path / "m", tmp_path / "c", latency_runs=50)
    formats = [v["format"] for v in report["variants"]]
    assert formats.count("tflite") >= 4 and formats.count("onnx") >= 2
    chosen = next(v for v in report["variants"] if v["name"] == report["selected"])
    assert chosen["accuracy_drop"] <= 0.01
    m = ModelManifest.from_json((tmp_path / "c" / chosen["manifest"]).read_bytes())
    site = next(c for c in m.preprocessing["columns"] if c["name"] == "site")
    assert site["vocabulary"] == ["east", "north", "south"]
    # A device: raw CSV rows (with blanks) -> numpy encoder from the manifest -> runtime.
    import pandas as pd

    frame = pd.read_csv(csv)
    records = frame.drop(columns=["state"]).to_dict("records")
    x = encode_records(records, m.preprocessing)
    probs = open_runner(tmp_path / "c" / chosen["path"]).predict_all(x)
    predicted = np.asarray(m.labels)[np.argmax(probs, axis=1)]
    assert np.mean(predicted == frame["state"].to_numpy()) > 0.85


def test_same_seed_same_result(tmp_path: Path) -> None:
    a = train("iris", tmp_path / "a", recipe="mlp", seed=3, params={"epochs": 3, "patience": 0})
    b = train("iris", tmp_path / "b", recipe="mlp", seed=3, params={"epochs": 3, "patience": 0})
    assert a["metrics"] == b["metrics"]
    for name in ("metrics.json", "profile.json", "golden.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    la = train("wine", tmp_path / "la", recipe="logistic", seed=1)
    lb = train("wine", tmp_path / "lb", recipe="logistic", seed=1)
    assert la["fit"] == {**lb["fit"], "seconds": la["fit"]["seconds"]}
    assert (tmp_path / "la" / "golden.json").read_text() == (tmp_path / "lb" / "golden.json").read_text()
