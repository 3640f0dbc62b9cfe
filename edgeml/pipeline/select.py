"""Choosing one variant: a pure function of the measured rows, the accuracy budget and a preference.

Eligible variants are those whose accuracy drop against the trained model is within
``max_accuracy_drop``. ``prefer="size"`` takes the smallest file; files within
:data:`SIZE_TOLERANCE` of the smallest count as the same size, and among those a full-integer
variant wins (its body runs on integer kernels, so it also suits NPUs, DSPs and microcontrollers,
where dynamic-range and float models do not), then the faster p50.
``"latency"`` takes the measured-fastest p50 (ties: smaller).
Every other variant gets the reason it was not chosen.
Quantized variants measured slower than their float original are flagged — on this CPU;
Arm boards often differ, which is why the choice follows measurements, not assumptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgeml.errors import UsageError

PREFERENCES = ("size", "latency")
FLOAT_QUANTIZATIONS = ("fp32",)
SLOWER_FLAG = "slower-than-fp32"
OVER_BUDGET_FLAG = "over-accuracy-budget"
EPS = 1e-9
SIZE_TOLERANCE = 0.05
INTEGER_ONLY = ("int8", "int8-qdq")


def flag_rows(rows: Sequence[dict[str, Any]], max_accuracy_drop: float) -> None:
    """Add flags in place: a quantized variant slower (p50) than its format's fp32; a drop over budget."""
    fp32 = {r["format"]: r for r in rows if r["quantization"] in FLOAT_QUANTIZATIONS}
    for row in rows:
        flags = row.setdefault("flags", [])
        base = fp32.get(row["format"])
        if (
            base is not None
            and row is not base
            and row["latency_p50_ms"] > base["latency_p50_ms"]
            and SLOWER_FLAG not in flags
        ):
            flags.append(SLOWER_FLAG)
            row.setdefault("notes", []).append(
                f"p50 {row['latency_p50_ms']:.4g} ms vs {base['latency_p50_ms']:.4g} ms for {base['name']}"
                f" ({row['latency_p50_ms'] / max(base['latency_p50_ms'], 1e-9):.2f}x) on this CPU"
            )
        if row["accuracy_drop"] > max_accuracy_drop + EPS and OVER_BUDGET_FLAG not in flags:
            flags.append(OVER_BUDGET_FLAG)


def select(rows: Sequence[dict[str, Any]], max_accuracy_drop: float = 0.01, prefer: str = "size") -> dict[str, Any]:
    """Pick one row; set each row's ``rejected_because`` (None for the chosen one).

    Returns ``{"selected", "prefer", "max_accuracy_drop", "within_budget", "rule", "reasons"}``.
    When no row is within budget the one with the smallest drop is chosen and
    ``within_budget`` is False. Raises UsageError for an unknown preference, a negative budget or
    no rows.
    """
    if prefer not in PREFERENCES:
        raise UsageError(f"unknown preference {prefer!r}", hint=f"use one of: {', '.join(PREFERENCES)}")
    if max_accuracy_drop < 0:
        raise UsageError("--max-accuracy-drop must be >= 0", hint="e.g. 0.01 for one percentage point")
    if not rows:
        raise UsageError("no variants to choose from")
    eligible = [r for r in rows if r["accuracy_drop"] <= max_accuracy_drop + EPS]
    within = bool(eligible)
    if not eligible:
        pool = sorted(rows, key=lambda r: (r["accuracy_drop"], r["size_bytes"]))
        chosen = pool[0]
        rule = f"no variant within {_pp(max_accuracy_drop)}: took the smallest accuracy drop"
    else:
        if prefer == "size":
            smallest = min(r["size_bytes"] for r in eligible)
            near = [r for r in eligible if r["size_bytes"] <= smallest * (1 + SIZE_TOLERANCE)]
            chosen = min(near, key=lambda r: (r["quantization"] not in INTEGER_ONLY, r["latency_p50_ms"], r["name"]))
        else:
            chosen = min(eligible, key=lambda r: _key(r, prefer))
        rule = (
            f"smallest file (within {SIZE_TOLERANCE:.0%}; full-integer first, then faster) among variants within"
            f" {_pp(max_accuracy_drop)} of the trained model's accuracy"
            if prefer == "size"
            else f"lowest measured p50 latency among variants within {_pp(max_accuracy_drop)}"
        )
    reasons: dict[str, str] = {}
    for row in rows:
        if row is chosen:
            row["rejected_because"] = None
            reasons[row["name"]] = "selected: " + rule
            continue
        if row["accuracy_drop"] > max_accuracy_drop + EPS:
            why = f"accuracy drop {_pp(row['accuracy_drop'])} exceeds the {_pp(max_accuracy_drop)} budget"
        elif prefer == "size" and row["size_bytes"] > chosen["size_bytes"] * (1 + SIZE_TOLERANCE):
            why = (
                f"larger: {row['size_bytes']:,} bytes vs {chosen['size_bytes']:,} for {chosen['name']}"
                f" ({row['size_bytes'] / max(chosen['size_bytes'], 1):.2f}x)"
            )
        elif prefer == "latency" and row["latency_p50_ms"] != chosen["latency_p50_ms"]:
            why = (
                f"slower: p50 {row['latency_p50_ms']:.4g} ms vs {chosen['latency_p50_ms']:.4g} ms for {chosen['name']}"
            )
        elif prefer == "size" and chosen["quantization"] in INTEGER_ONLY and row["quantization"] not in INTEGER_ONLY:
            why = (
                f"about the same size as {chosen['name']} ({row['size_bytes']:,} vs {chosen['size_bytes']:,} bytes)"
                " but its activations are float; the int8 variant runs its body on integer kernels"
                " (NPUs, DSPs, microcontrollers)"
            )
        elif prefer == "size":
            why = (
                f"about the same size as {chosen['name']} ({row['size_bytes']:,} vs {chosen['size_bytes']:,} bytes)"
                f" but slower: p50 {row['latency_p50_ms']:.4g} ms vs {chosen['latency_p50_ms']:.4g} ms"
            )
        else:
            why = f"tie with {chosen['name']}, which wins on the secondary criterion"
        row["rejected_because"] = why
        reasons[row["name"]] = why
    return {
        "selected": chosen["name"],
        "prefer": prefer,
        "max_accuracy_drop": max_accuracy_drop,
        "within_budget": within,
        "rule": rule,
        "reasons": reasons,
    }


def _key(row: dict[str, Any], prefer: str) -> tuple[float, float, str]:
    if prefer == "size":
        return (row["size_bytes"], row["latency_p50_ms"], row["name"])
    return (row["latency_p50_ms"], row["size_bytes"], row["name"])


def _pp(fraction: float) -> str:
    return f"{fraction * 100:.2f} pp"
