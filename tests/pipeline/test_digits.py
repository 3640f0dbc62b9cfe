"""digits end to end (shared session fixtures): variants, fields, selection, manifests, reports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.protocol import ModelManifest
from device_agent.protocol.features import pooled_statistics
from edgeml.pipeline.convert import convert
from edgeml.pipeline.hostinfo import cpu_model
from edgeml.pipeline.report import render_variant_table
from edgeml.pipeline.runtimes import open_runner
from edgeml.pipeline.select import select

pytestmark = pytest.mark.slow

FIELDS = {
    "name",
    "format",
    "quantization",
    "path",
    "manifest",
    "size_bytes",
    "accuracy",
    "accuracy_drop",
    "agreement",
    "max_abs_diff",
    "latency_p50_ms",
    "latency_p95_ms",
    "load_ms",
    "flags",
    "rejected_because",
}


@pytest.fixture(scope="module")
def report(digits_convert_dir: Path) -> dict[str, Any]:
    return json.loads((digits_convert_dir / "report.json").read_text())


def test_report_has_tflite_and_onnx_variants_with_all_fields(report: dict[str, Any], digits_convert_dir: Path) -> None:
    tflite = [v for v in report["variants"] if v["format"] == "tflite"]
    onnx = [v for v in report["variants"] if v["format"] == "onnx"]
    assert {v["quantization"] for v in tflite} >= {"fp32", "dynamic", "fp16", "int8"}
    assert {v["quantization"] for v in onnx} >= {"fp32", "int8-dynamic", "int8-qdq"}
    for v in report["variants"]:
        assert set(v) >= FIELDS, FIELDS - set(v)
        assert (digits_convert_dir / v["path"]).stat().st_size == v["size_bytes"]
        assert v["latency_p95_ms"] >= v["latency_p50_ms"] > 0
        assert 0 <= v["agreement"] <= 1
    assert report["cpu"] == cpu_model() and report["measured"]["threads"] == 1


def test_selects_an_int8_tflite_variant_within_one_point(report: dict[str, Any]) -> None:
    chosen = next(v for v in report["variants"] if v["name"] == report["selected"])
    assert chosen["format"] == "tflite" and chosen["quantization"] == "int8"
    assert chosen["accuracy_drop"] <= 0.01
    assert chosen["rejected_because"] is None
    others = [v for v in report["variants"] if v["name"] != report["selected"]]
    assert all(v["rejected_because"] for v in others)
    fp32 = next(v for v in report["variants"] if v["name"] == "tflite-fp32")
    assert chosen["size_bytes"] / fp32["size_bytes"] <= 0.30


def test_accuracy_is_what_litert_measures(
    report: dict[str, Any], digits_convert_dir: Path, digits_model_dir: Path
) -> None:
    """Recompute the int8 row's accuracy with the LiteRT interpreter directly (not the pipeline's runner)."""
    from ai_edge_litert.interpreter import Interpreter

    data = np.load(digits_model_dir / "data.npz")
    interp = Interpreter(model_path=str(digits_convert_dir / "variants" / "tflite-int8.tflite"), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hits = 0
    for x, y in zip(data["x_test"], data["y_test"]):
        interp.set_tensor(inp["index"], x[None].astype(np.float32))
        interp.invoke()
        hits += int(np.argmax(interp.get_tensor(out["index"])) == y)
    row = next(v for v in report["variants"] if v["name"] == "tflite-int8")
    assert row["accuracy"] == pytest.approx(hits / len(data["y_test"]), abs=1e-6)
    trained = json.loads((digits_model_dir / "metrics.json").read_text())["accuracy"]
    assert row["accuracy_drop"] == pytest.approx(trained - row["accuracy"], abs=1e-5)


def test_manifests_and_golden_vectors_replay_in_their_runtime(report: dict[str, Any], digits_convert_dir: Path) -> None:
    for v in report["variants"]:
        m = ModelManifest.from_json((digits_convert_dir / v["manifest"]).read_bytes())
        m.validate()
        assert (m.name, m.version, m.format, m.quantization) == ("digits", "0.0.0", v["format"], v["quantization"])
        assert m.inputs[0].shape == [-1, 8, 8, 1] and m.outputs[0].shape == [-1, 10]
        assert m.labels == [str(i) for i in range(10)]
        assert m.preprocessing["layout"] == "NHWC" and len(m.preprocessing["feature_names"]) == 64
        assert m.latency_budget_ms is not None and m.latency_budget_ms >= 50
        assert m.metrics["accuracy"] == v["accuracy"] and m.lineage["dataset_sha256"]
        assert len(m.golden) >= 3
        runner = open_runner(digits_convert_dir / v["path"])
        for g in m.golden:
            got = runner.predict(np.asarray(g.input, dtype=np.float32)[None])[0]
            assert np.max(np.abs(got - np.asarray(g.output))) <= m.golden_atol


def test_image_reference_profile_is_pooled_and_reproducible(digits_convert_dir: Path, digits_model_dir: Path) -> None:
    m = ModelManifest.from_json((digits_convert_dir / "variants" / "tflite-int8.manifest.json").read_bytes())
    ref = m.reference
    assert ref.feature_kind == "pooled" and ref.pooling == "grid_mean:2x2" and len(ref.features) == 4
    assert m.preprocessing["reference_pooling"]["pooling"] == "grid_mean:2x2"
    x_train = np.load(digits_model_dir / "data.npz")["x_train"]
    stats = pooled_statistics(x_train, ref.pooling)
    for j, f in enumerate(ref.features):
        counts = np.bincount(np.searchsorted(f.edges, stats[:, j], side="left"), minlength=len(f.edges) + 1)
        np.testing.assert_allclose(counts / counts.sum(), f.freqs, atol=1e-5)
    assert sum(ref.classes.values()) == pytest.approx(1.0, abs=1e-4)
    assert len(ref.confidence_freqs) == len(ref.confidence_edges) + 1


def test_reports_render(report: dict[str, Any], digits_convert_dir: Path) -> None:
    table = render_variant_table(report)
    for v in report["variants"]:
        assert v["name"] in table
    assert f"selected: {report['selected']}" in table
    md = (digits_convert_dir / "report.md").read_text()
    assert "Why not the others" in md and report["cpu"] in md
    html = (digits_convert_dir / "report.html").read_text()
    assert "<svg" in html and html.count("<rect") == 3 * len(report["variants"])
    assert not re.search(r"""(src|href)=["']?https?:""", html)  # no external assets


def test_prefer_latency_picks_the_measured_fastest_eligible(report: dict[str, Any]) -> None:
    rows = [dict(v) for v in report["variants"]]
    sel = select(rows, max_accuracy_drop=0.01, prefer="latency")
    eligible = [v for v in rows if v["accuracy_drop"] <= 0.01]
    assert sel["selected"] == min(eligible, key=lambda v: v["latency_p50_ms"])["name"]


def test_int8_io_variant_on_request(digits_model_dir: Path, tmp_path: Path) -> None:
    report = convert(digits_model_dir, tmp_path / "c", int8_io=True, latency_runs=5)
    row = next(v for v in report["variants"] if v["name"] == "tflite-int8-io")
    assert "int8-io" in row["flags"] and row["accuracy_drop"] <= 0.01
    m = ModelManifest.from_json((tmp_path / "c" / row["manifest"]).read_bytes())
    assert m.inputs[0].dtype == "int8" and m.inputs[0].scale and m.outputs[0].dtype == "int8"
    assert "quantized_io" in m.preprocessing
    # a device quantizes the golden input with the manifest's scale/zero point and gets the golden output
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tmp_path / "c" / row["path"]))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    spec_in, spec_out = m.inputs[0], m.outputs[0]
    for g in m.golden:
        q = np.clip(np.round(np.asarray(g.input)[None] / spec_in.scale + spec_in.zero_point), -128, 127)
        interp.set_tensor(inp["index"], q.astype(np.int8))
        interp.invoke()
        y = (interp.get_tensor(out["index"]).astype(np.float32) - spec_out.zero_point) * spec_out.scale
        assert np.max(np.abs(y[0] - np.asarray(g.output))) <= m.golden_atol


def test_a_variant_that_cannot_be_built_is_skipped_with_its_reason(
    digits_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeml.errors import ConversionError
    from edgeml.pipeline import tflite

    real = tflite.convert

    def failing(saved: Path, quantization: str, *args: Any, **kwargs: Any) -> bytes:
        if quantization == "fp16":
            raise ConversionError("TFLite fp16 conversion failed: no kernel for op FOO")
        return real(saved, quantization, *args, **kwargs)

    monkeypatch.setattr(tflite, "convert", failing)
    report = convert(digits_model_dir, tmp_path / "c", latency_runs=5)
    assert "tflite-fp16" not in {v["name"] for v in report["variants"]}
    assert report["skipped"] == [
        {
            "name": "tflite-fp16",
            "format": "tflite",
            "quantization": "fp16",
            "reason": "TFLite fp16 conversion failed: no kernel for op FOO",
        }
    ]
    assert not (tmp_path / "c" / "variants" / "tflite-fp16.tflite").exists()
    assert "skipped tflite-fp16" in render_variant_table(report)
