"""``edgeml convert``: build every TFLite/ONNX variant of a trained model, evaluate each in its
device runtime, choose one, and write ``report.json``/``.md``/``.html`` plus one manifest per variant.

The output folder is written atomically (see :mod:`edgeml.pipeline.outputs`).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from device_agent.protocol import GoldenVector, ModelManifest, ReferenceProfile
from edgeml.errors import ConversionError, UsageError
from edgeml.pipeline import onnx_export, tflite
from edgeml.pipeline.hostinfo import cpu_info, package_versions
from edgeml.pipeline.model_dir import TrainedModel, open_model_dir
from edgeml.pipeline.outputs import atomic_dir, write_json
from edgeml.pipeline.report import write_reports
from edgeml.pipeline.runtimes import open_runner
from edgeml.pipeline.select import PREFERENCES, flag_rows, select

REPORT_MARKER = "report.json"
FORMAT = "edgeml-convert/1"
KERAS_VARIANTS = (
    ("tflite-fp32", "tflite", "fp32"),
    ("tflite-dynamic", "tflite", "dynamic"),
    ("tflite-fp16", "tflite", "fp16"),
    ("tflite-int8", "tflite", "int8"),
    ("onnx-fp32", "onnx", "fp32"),
    ("onnx-int8-dynamic", "onnx", "int8-dynamic"),
    ("onnx-int8-qdq", "onnx", "int8-qdq"),
)
SKLEARN_VARIANTS = tuple(v for v in KERAS_VARIANTS if v[1] == "onnx")
GOLDEN_ATOL = {"fp32": 1e-4, "fp16": 5e-3, "dynamic": 1e-2}
QUANTIZED_GOLDEN_ATOL = 2e-2
MIN_LATENCY_BUDGET_MS = 50.0

Progress = Callable[[str, int, int], None]


def convert(
    model_dir: str | Path,
    out_dir: str | Path,
    max_accuracy_drop: float = 0.01,
    prefer: str = "size",
    progress: Progress | None = None,
    int8_io: bool = False,
    latency_runs: int = 200,
    threads: int = 1,
) -> dict[str, Any]:
    """Convert, evaluate, select and report; return the report (as written to ``report.json``).

    ``progress(step, done, total)`` is called as the work advances. ``int8_io`` adds a
    ``tflite-int8-io`` variant with int8 input/output tensors.
    Raises InputDataError for a folder not produced by ``edgeml train``, UsageError for bad
    options or an unusable ``out_dir``, ConversionError when no variant at all can be built.
    """
    if prefer not in PREFERENCES:
        raise UsageError(f"unknown preference {prefer!r}", hint=f"use one of: {', '.join(PREFERENCES)}")
    if not 0 <= max_accuracy_drop < 1:
        raise UsageError(
            f"--max-accuracy-drop {max_accuracy_drop} is not a fraction in [0, 1)", hint="e.g. 0.01 for 1 pp"
        )
    tm = open_model_dir(model_dir)
    plan = list(KERAS_VARIANTS if tm.framework == "keras" else SKLEARN_VARIANTS)
    if int8_io and tm.framework == "keras":
        plan.insert(4, ("tflite-int8-io", "tflite", "int8"))
    total = 2 + 2 * len(plan)
    step = 0

    def tick(msg: str) -> None:
        nonlocal step
        if progress is not None:
            progress(msg, step, total)
        step += 1

    tick("loading the trained model")
    model = tm.load_model()
    x_test, y_test = tm.data["x_test"], tm.data["y_test"]
    ref_probs = tm.predict(model, x_test)
    trained_acc = float(np.mean(np.argmax(ref_probs, axis=1) == y_test))
    golden_idx = [int(i) for i in tm.golden.get("indices", [])][:8] or [0, 1, 2]
    with atomic_dir(Path(out_dir), REPORT_MARKER) as tmp:
        vdir = tmp / "variants"
        vdir.mkdir()
        built: list[tuple[str, str, str, Path]] = []
        skipped: list[dict[str, str]] = []
        with tempfile.TemporaryDirectory(prefix="edgeml-export-") as work:
            saved: Path | None = None
            onnx_fp32: bytes | None = None
            for name, fmt, quant in plan:
                tick(f"converting {name}")
                path = vdir / f"{name}.{fmt}"
                try:
                    if saved is None and tm.framework == "keras":
                        saved = tflite.export_saved_model(model, Path(work) / "saved_model")
                    if fmt == "tflite":
                        assert saved is not None
                        blob = tflite.convert(saved, quant, tm.data["x_train"], int8_io=name.endswith("-io"))
                    else:
                        if onnx_fp32 is None:
                            onnx_fp32 = _onnx_fp32(tm, model, saved)
                        blob = _onnx_variant(onnx_fp32, quant, tm)
                except ConversionError as exc:
                    if quant == "fp32" and fmt == "onnx" and tm.framework == "sklearn":
                        raise
                    skipped.append({"name": name, "format": fmt, "quantization": quant, "reason": exc.message})
                    continue
                path.write_bytes(blob)
                built.append((name, fmt, quant, path))
        if not built:
            raise ConversionError(
                "no variant could be built", hint="see the reasons above; the model may use unsupported ops"
            )
        rows: list[dict[str, Any]] = []
        goldens: dict[str, tuple[list[GoldenVector], Any]] = {}
        for name, fmt, quant, path in built:
            tick(f"evaluating {name} in {'LiteRT' if fmt == 'tflite' else 'onnxruntime'}")
            runner = open_runner(path, threads=threads)
            probs = runner.predict_all(x_test)
            if probs.shape != ref_probs.shape:
                raise ConversionError(f"{name} outputs shape {list(probs.shape)}, expected {list(ref_probs.shape)}")
            acc = float(np.mean(np.argmax(probs, axis=1) == y_test))
            p50, p95 = runner.latency(x_test, runs=latency_runs)
            rows.append(
                {
                    "name": name,
                    "format": fmt,
                    "quantization": quant,
                    "path": f"variants/{path.name}",
                    "manifest": f"variants/{name}.manifest.json",
                    "runtime": "litert" if fmt == "tflite" else "onnxruntime",
                    "size_bytes": path.stat().st_size,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "accuracy": round(acc, 6),
                    "accuracy_drop": round(trained_acc - acc, 6),
                    "agreement": round(float(np.mean(np.argmax(probs, axis=1) == np.argmax(ref_probs, axis=1))), 6),
                    "max_abs_diff": round(float(np.max(np.abs(probs - ref_probs))), 6),
                    "latency_p50_ms": round(p50, 5),
                    "latency_p95_ms": round(p95, 5),
                    "load_ms": round(runner.load_ms, 3),
                    "flags": ["int8-io"] if name.endswith("-io") else [],
                    "rejected_because": None,
                }
            )
            gx = x_test[golden_idx]
            goldens[name] = (
                [GoldenVector(np.asarray(x).tolist(), [float(v) for v in runner.predict(x[None]).ravel()]) for x in gx],
                runner,
            )
        flag_rows(rows, max_accuracy_drop)
        selection = select(rows, max_accuracy_drop=max_accuracy_drop, prefer=prefer)
        tick("writing manifests and reports")
        for row in rows:
            golden, runner = goldens[row["name"]]
            manifest = _manifest(tm, row, golden, runner)
            manifest.validate()
            write_json(tmp / row["manifest"], manifest.to_dict())
        report = {
            "format": FORMAT,
            "model_dir": str(Path(model_dir)),
            "name": tm.name,
            "cpu": cpu_info()["model"],
            "host": cpu_info(),
            "measured": {
                "batch": 1,
                "threads": threads,
                "latency_runs": latency_runs,
                "warmup": 20,
                "test_rows": int(len(y_test)),
            },
            "trained": {
                "recipe": tm.info["recipe"],
                "framework": tm.framework,
                "accuracy": round(trained_acc, 6),
                "f1_macro": tm.metrics.get("f1_macro"),
                "roc_auc": tm.metrics.get("roc_auc"),
                "size_bytes": tm.model_file.stat().st_size,
            },
            "variants": rows,
            "skipped": skipped,
            "selected": selection["selected"],
            "selection": selection,
            "packages": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_reports(tmp, report)
        write_json(tmp / REPORT_MARKER, report)  # last: marks a complete folder
    tick("done")
    return report


def _onnx_fp32(tm: TrainedModel, model: Any, saved: Path | None) -> bytes:
    if tm.framework == "keras":
        assert saved is not None
        return onnx_export.keras_to_onnx(saved)
    return onnx_export.sklearn_to_onnx(model, int(tm.data["x_train"].shape[1]))


def _onnx_variant(fp32: bytes, quant: str, tm: TrainedModel) -> bytes:
    if quant == "fp32":
        return fp32
    if quant == "int8-dynamic":
        return onnx_export.quantize_dynamic(fp32)
    per_channel = "Conv" in onnx_export.quantizable_ops(fp32)
    return onnx_export.quantize_static_qdq(fp32, tm.data["x_train"], per_channel=per_channel)


def _manifest(tm: TrainedModel, row: dict[str, Any], golden: list[GoldenVector], runner: Any) -> ModelManifest:
    preprocessing = dict(tm.info["preprocessing"])
    profile = ReferenceProfile.from_dict(tm.profile)
    if profile.feature_kind == "pooled":
        preprocessing["reference_pooling"] = {
            "pooling": profile.pooling,
            "function": "device_agent.protocol.features.pooled_statistics",
            "how": "split each raw HxW image into a 2x2 grid with np.array_split on height and width;"
            " statistic r*2+c is the mean of cell (r, c) over its pixels and channels",
        }
    preprocessing["golden_input"] = "one sample without the batch dimension: feed np.asarray(input)[None]"
    if "int8-io" in row["flags"]:
        preprocessing["quantized_io"] = "quantize inputs with inputs[0].scale/zero_point; dequantize outputs"
    quant = row["quantization"]
    atol = GOLDEN_ATOL.get(quant, QUANTIZED_GOLDEN_ATOL)
    return ModelManifest(
        name=tm.name,
        version="0.0.0",
        format=row["format"],
        quantization=quant,
        filename=Path(row["path"]).name,
        task="classification",
        inputs=runner.inputs,
        outputs=runner.outputs,
        labels=tm.labels,
        preprocessing=preprocessing,
        reference=profile,
        golden=golden,
        golden_atol=atol,
        latency_budget_ms=round(max(5 * row["latency_p95_ms"], MIN_LATENCY_BUDGET_MS), 3),
        metrics={k: v for k, v in row.items() if k not in ("path", "manifest")},
        lineage=dict(tm.lineage, variant=row["name"], sha256=row["sha256"], converted_with=package_versions()),
    )
