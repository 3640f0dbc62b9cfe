"""Variant selection and flags: a pure function of measured rows."""

from __future__ import annotations

from typing import Any

import pytest

from edgeml.errors import UsageError
from edgeml.pipeline.select import OVER_BUDGET_FLAG, SLOWER_FLAG, flag_rows, select


def row(name: str, fmt: str, quant: str, size: int, drop: float, p50: float) -> dict[str, Any]:
    return {
        "name": name,
        "format": fmt,
        "quantization": quant,
        "size_bytes": size,
        "accuracy_drop": drop,
        "latency_p50_ms": p50,
    }


def rows() -> list[dict[str, Any]]:
    return [
        row("tflite-fp32", "tflite", "fp32", 1000, 0.0, 1.00),
        row("tflite-dynamic", "tflite", "dynamic", 300, 0.0, 1.40),
        row("tflite-fp16", "tflite", "fp16", 500, 0.0, 0.90),
        row("tflite-int8", "tflite", "int8", 290, 0.02, 1.50),
        row("onnx-fp32", "onnx", "fp32", 1010, 0.0, 3.0),
        row("onnx-int8-qdq", "onnx", "int8-qdq", 350, 0.004, 4.0),
    ]


def test_prefer_size_skips_over_budget_and_gives_reasons() -> None:
    rs = rows()
    sel = select(rs, max_accuracy_drop=0.01, prefer="size")
    assert sel["selected"] == "tflite-dynamic"
    assert sel["within_budget"] is True
    by = {r["name"]: r for r in rs}
    assert by["tflite-dynamic"]["rejected_because"] is None
    assert "exceeds the 1.00 pp budget" in by["tflite-int8"]["rejected_because"]
    assert "larger" in by["tflite-fp32"]["rejected_because"]
    assert set(sel["reasons"]) == set(by)


def test_prefer_latency_takes_measured_fastest_within_budget() -> None:
    rs = rows()
    sel = select(rs, max_accuracy_drop=0.01, prefer="latency")
    assert sel["selected"] == "tflite-fp16"
    assert "slower" in {r["name"]: r for r in rs}["tflite-fp32"]["rejected_because"]


def test_size_near_tie_prefers_full_integer() -> None:
    rs = [
        row("tflite-dynamic", "tflite", "dynamic", 1000, 0.0, 1.0),
        row("tflite-int8", "tflite", "int8", 1020, 0.0, 2.0),
    ]
    sel = select(rs, 0.01, "size")
    assert sel["selected"] == "tflite-int8"
    assert "integer kernels" in rs[0]["rejected_because"]


def test_budget_widening_changes_choice() -> None:
    assert select(rows(), max_accuracy_drop=0.05, prefer="size")["selected"] == "tflite-int8"


def test_nothing_within_budget_takes_smallest_drop() -> None:
    rs = [row("a", "tflite", "int8", 10, 0.2, 1.0), row("b", "tflite", "dynamic", 20, 0.1, 1.0)]
    sel = select(rs, 0.01, "size")
    assert sel["selected"] == "b" and sel["within_budget"] is False


def test_flags_quantized_slower_than_float_original() -> None:
    rs = rows()
    flag_rows(rs, 0.01)
    by = {r["name"]: r["flags"] for r in rs}
    assert SLOWER_FLAG in by["tflite-dynamic"] and SLOWER_FLAG in by["tflite-int8"]
    assert SLOWER_FLAG in by["onnx-int8-qdq"]
    assert SLOWER_FLAG not in by["tflite-fp16"]  # faster than fp32
    assert SLOWER_FLAG not in by["tflite-fp32"]
    assert OVER_BUDGET_FLAG in by["tflite-int8"] and OVER_BUDGET_FLAG not in by["tflite-dynamic"]


@pytest.mark.parametrize(("budget", "prefer"), [(0.01, "speed"), (-0.1, "size")])
def test_bad_options_are_usage_errors(budget: float, prefer: str) -> None:
    with pytest.raises(UsageError):
        select(rows(), budget, prefer)
