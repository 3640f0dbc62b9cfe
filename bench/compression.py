"""Compression benchmark: size, accuracy and latency ratios, measured side by side in one run.

    .venv/bin/python bench/compression.py            # full run (~3-5 min on 2 cores)
    .venv/bin/python bench/compression.py --quick    # fewer epochs/runs, for a smoke check

Prints, for the digits CNN and for MobileNetV2(alpha=0.35, 96x96x3, weights=None, random data —
no download):
  - int8/fp32 TFLite size ratio (targets: <= 0.30 digits CNN, <= 0.38 MobileNetV2-0.35);
  - latency of every variant in LiteRT and onnxruntime (batch 1, one thread, after warm-up) as a
    ratio to the fp32 variant of the same runtime;
then, for every bundled dataset with its default recipe, the chosen variant's accuracy drop
(target <= 1 pp), and checks that ``--prefer latency`` picks the measured-fastest variant within
the accuracy budget and that every quantized variant slower than its float original is flagged.
Where a target is missed the line says by how much.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edgeml.pipeline import onnx_export, tflite  # noqa: E402
from edgeml.pipeline.convert import convert  # noqa: E402
from edgeml.pipeline.hostinfo import cpu_info  # noqa: E402
from edgeml.pipeline.runtimes import open_runner  # noqa: E402
from edgeml.pipeline.select import SLOWER_FLAG, select  # noqa: E402
from edgeml.pipeline.train import train  # noqa: E402

DATASETS = ("digits", "breast_cancer", "wine", "iris")
SIZE_TARGETS = {"digits CNN": 0.30, "MobileNetV2-0.35": 0.38}
DROP_TARGET = 0.01


def verdict(ok: bool, miss: str) -> str:
    return "OK" if ok else f"MISSED ({miss})"


def variants_of_keras(model: Any, x_train: np.ndarray, work: Path, runs: int) -> dict[str, dict[str, float]]:
    """Build TFLite fp32/dynamic/fp16/int8 and ONNX fp32/int8-dynamic/int8-qdq; measure size and latency."""
    saved = tflite.export_saved_model(model, work / "saved_model")
    blobs: dict[str, bytes] = {}
    for quant in tflite.TFLITE_QUANTIZATIONS:
        blobs[f"tflite-{quant}"] = tflite.convert(saved, quant, x_train)
    fp32 = onnx_export.keras_to_onnx(saved)
    blobs["onnx-fp32"] = fp32
    for name, make in (
        ("onnx-int8-dynamic", lambda: onnx_export.quantize_dynamic(fp32)),
        ("onnx-int8-qdq", lambda: onnx_export.quantize_static_qdq(fp32, x_train[:64], per_channel=True)),
    ):
        try:
            blobs[name] = make()
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            print(f"  {name}: not built ({exc})")
    out: dict[str, dict[str, float]] = {}
    x = x_train[:32]
    for name, blob in blobs.items():
        path = work / f"{name}.{'tflite' if name.startswith('tflite') else 'onnx'}"
        path.write_bytes(blob)
        runner = open_runner(path)
        p50, p95 = runner.latency(x, runs=runs, warmup=max(10, runs // 10))
        out[name] = {"size": len(blob), "p50": p50, "p95": p95}
    return out


def print_model_table(title: str, rows: dict[str, dict[str, float]]) -> float:
    print(f"\n== {title}: size and latency (batch 1, 1 thread) ==")
    print(f"{'variant':<19} {'size B':>10} {'size/fp32':>9} {'p50 ms':>8} {'p95 ms':>8} {'p50/fp32':>9}")
    for name, r in rows.items():
        base = rows["tflite-fp32" if name.startswith("tflite") else "onnx-fp32"]
        print(
            f"{name:<19} {int(r['size']):>10,} {r['size'] / base['size']:>9.3f} {r['p50']:>8.3f}"
            f" {r['p95']:>8.3f} {r['p50'] / base['p50']:>8.2f}x"
        )
    ratio = rows["tflite-int8"]["size"] / rows["tflite-fp32"]["size"]
    target = SIZE_TARGETS[title]
    print(
        f"int8/fp32 TFLite size: {ratio:.3f}x (target <= {target:.2f}x):"
        f" {verdict(ratio <= target, f'{ratio - target:+.3f}x over')}"
    )
    onnx_fp32 = rows["onnx-fp32"]["p50"]
    print(f"onnxruntime fp32 / LiteRT fp32 latency: {onnx_fp32 / rows['tflite-fp32']['p50']:.2f}x")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few epochs and runs (smoke check, not the numbers)")
    args = parser.parse_args()
    runs = 50 if args.quick else 200
    info = cpu_info()
    print(f"CPU: {info['model']} ({info['machine']}, {info['cores']} cores, flags: {', '.join(info['flags'])})")
    t0 = time.time()
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeml-bench-") as tmpdir:
        tmp = Path(tmpdir)
        # 1. The bundled datasets through the real pipeline (train -> convert -> select).
        reports: dict[str, dict[str, Any]] = {}
        for ds in DATASETS:
            params = {"epochs": 5} if args.quick else None
            train(ds, tmp / ds, params=params)
            reports[ds] = convert(tmp / ds, tmp / f"{ds}-c", latency_runs=runs)

        import keras

        digits_model = keras.models.load_model(tmp / "digits" / "model.keras", compile=False)
        x_digits = np.load(tmp / "digits" / "data.npz")["x_train"]
        (tmp / "w1").mkdir()
        digits_rows = variants_of_keras(digits_model, x_digits, tmp / "w1", runs)
        if print_model_table("digits CNN", digits_rows) > SIZE_TARGETS["digits CNN"]:
            missed.append("digits size")

        keras.utils.set_random_seed(0)
        mnet = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
        x_rand = np.random.default_rng(0).uniform(-1, 1, size=(128, 96, 96, 3)).astype(np.float32)
        (tmp / "w2").mkdir()
        mnet_rows = variants_of_keras(mnet, x_rand, tmp / "w2", max(20, runs // 4))
        if print_model_table("MobileNetV2-0.35", mnet_rows) > SIZE_TARGETS["MobileNetV2-0.35"]:
            missed.append("MobileNetV2 size")

        print("\n== chosen variant per bundled dataset (--prefer size, budget 1 pp) ==")
        print(f"{'dataset':<14} {'recipe':<7} {'trained acc':>11} {'chosen':<18} {'drop pp':>8}  target <= 1 pp")
        for ds, rep in reports.items():
            chosen = next(v for v in rep["variants"] if v["name"] == rep["selected"])
            ok = chosen["accuracy_drop"] <= DROP_TARGET
            over = f"{100 * (chosen['accuracy_drop'] - DROP_TARGET):+.2f} pp over"
            if not ok:
                missed.append(f"{ds} drop")
            print(
                f"{ds:<14} {rep['trained']['recipe']:<7} {rep['trained']['accuracy']:>11.4f} {chosen['name']:<18}"
                f" {100 * chosen['accuracy_drop']:>+8.2f}  "
                f"{verdict(ok, over)}"
            )

        print("\n== --prefer latency and slow-quantized flags ==")
        for ds, rep in reports.items():
            rows = [dict(v) for v in rep["variants"]]
            sel = select(rows, DROP_TARGET, "latency")
            eligible = [v for v in rows if v["accuracy_drop"] <= DROP_TARGET]
            fastest = min(eligible, key=lambda v: v["latency_p50_ms"])
            base = {v["format"]: v for v in rows if v["quantization"] == "fp32"}
            slower = [
                v["name"]
                for v in rows
                if v["quantization"] != "fp32" and v["latency_p50_ms"] > base[v["format"]]["latency_p50_ms"]
            ]
            flags = {v["name"]: v["flags"] for v in rep["variants"]}
            unflagged = [n for n in slower if SLOWER_FLAG not in flags[n]]
            chosen_p50 = next(v for v in rows if v["name"] == sel["selected"])["latency_p50_ms"]
            ok = chosen_p50 == fastest["latency_p50_ms"] and not unflagged  # ties at equal p50 are fine
            if not ok:
                missed.append(f"{ds} latency choice/flags")
            print(
                f"{ds:<14} fastest within budget: {fastest['name']} ({fastest['latency_p50_ms']:.4f} ms);"
                f" chosen: {sel['selected']}; quantized slower than fp32 (flagged): {', '.join(slower) or 'none'}"
                f"  {verdict(ok, 'see above')}"
            )
    print(f"\n{len(missed)} target(s) missed{': ' + ', '.join(missed) if missed else ''}; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
