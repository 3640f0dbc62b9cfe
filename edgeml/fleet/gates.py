"""Rollout gates: small expressions evaluated on merged telemetry of a cohort against its control.

A gate is ``<metric><op><threshold>``, e.g. ``p95_latency_ratio<=1.2``. Metrics:

| metric               | value                                                                 |
|----------------------|-----------------------------------------------------------------------|
| ``update_failures``  | devices of the cohort that failed or rolled back the candidate          |
| ``error_rate``       | (errors + non-finite outputs) / requests of the cohort on the candidate |
| ``p95_latency_ratio``| cohort p95 latency / control p95 latency (interpolated in the bucket)   |
| ``p95_ms``           | cohort p95 latency in milliseconds                                      |
| ``psi``              | largest per-feature PSI of the cohort's inputs vs the manifest reference|
| ``prediction_shift`` | total variation distance of cohort vs control class distributions       |
| ``shadow_agreement`` | share of shadow requests where the candidate agreed with the active one |

Pure: values in, decisions out. :func:`evaluate_gates` never raises on missing data: a value it
cannot compute yet is ``None`` and the gate is *pending*; a relative gate without any control
data is *not applicable* (there is nothing to compare with, e.g. the very first release).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from device_agent.protocol import LATENCY_BOUNDS_MS, LatencyHistogram, TelemetrySummary, distribution_shift
from edgeml.errors import UsageError

# Distances between distributions are biased upward on small samples (PSI over k bins is about
# (k - 1) / n for n samples drawn from the reference itself): judge them only on enough samples.
SAMPLES_PER_BIN = 50

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}

METRICS = (
    "update_failures",
    "error_rate",
    "p95_latency_ratio",
    "p95_ms",
    "psi",
    "prediction_shift",
    "shadow_agreement",
)
# gates that compare the cohort with the control group
RELATIVE = ("p95_latency_ratio", "prediction_shift")

DEFAULT_GATES = (
    "update_failures<=0",
    "error_rate<=0.01",
    "p95_latency_ratio<=1.2",
    "psi<=0.2",
    "prediction_shift<=0.1",
)
SHADOW_GATE = "shadow_agreement>=0.97"

_GATE = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Gate:
    """One threshold on one metric. Build with :meth:`parse`."""

    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        """Parse ``metric<op>number``. Raises UsageError naming the problem."""
        m = _GATE.match(text or "")
        if not m:
            raise UsageError(
                f"gate {text!r} is not of the form METRIC<OP>NUMBER",
                hint=f"for example p95_latency_ratio<=1.2; metrics: {', '.join(METRICS)}; ops: <= >= < > ==",
            )
        metric, op, number = m.groups()
        if metric not in METRICS:
            raise UsageError(f"gate {text!r}: unknown metric {metric!r}", hint=f"use one of {', '.join(METRICS)}")
        try:
            threshold = float(number)
        except ValueError as exc:
            raise UsageError(f"gate {text!r}: {number!r} is not a number") from exc
        if not math.isfinite(threshold):
            raise UsageError(f"gate {text!r}: the threshold must be finite")
        return cls(metric, op, threshold)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)


def parse_gates(texts: Sequence[str] | None, shadow_first: bool = False) -> list[Gate]:
    """Gates from their texts (defaults when empty). A later gate on the same metric replaces an earlier one."""
    chosen = list(texts) if texts else list(DEFAULT_GATES)
    if shadow_first and not any(t.strip().startswith("shadow_agreement") for t in chosen):
        chosen.append(SHADOW_GATE)
    by_metric: dict[str, Gate] = {}
    for text in chosen:
        gate = Gate.parse(text)
        by_metric[gate.metric] = gate
    return list(by_metric.values())


def interpolated_quantile(hist: LatencyHistogram, q: float) -> float | None:
    """q-quantile in ms, interpolated geometrically inside its bucket (the buckets are 26% wide,
    too coarse for a 1.2 ratio gate when read as bucket bounds). None when empty."""
    total = hist.count
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, c in enumerate(hist.counts):
        if c and seen + c >= rank:
            upper = LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)]
            lower = LATENCY_BOUNDS_MS[i - 1] if 0 < i <= len(LATENCY_BOUNDS_MS) else upper / 10 ** 0.1
            frac = min(1.0, max(0.0, (rank - seen) / c))
            return float(lower * (upper / lower) ** frac)
        seen += c
    return LATENCY_BOUNDS_MS[-1]


@dataclass
class GateInputs:
    """What the gates look at: merged telemetry of the cohort on the candidate and of the control
    group on the previous version, failures counted from events, and the reference profile."""

    cohort: TelemetrySummary = field(default_factory=TelemetrySummary)
    control: TelemetrySummary = field(default_factory=TelemetrySummary)
    update_failures: int = 0
    failure_notes: list[str] = field(default_factory=list)  # "device: event: reason" of the failures
    reference_freqs: Optional[list[list[float]]] = None
    cohort_psi_fallback: Optional[float] = None  # requests-weighted PSI the devices reported


def metric_value(metric: str, data: GateInputs) -> float | None:
    """The metric's value, or None when there is not enough data to say."""
    cohort, control = data.cohort, data.control
    if metric == "update_failures":
        return float(data.update_failures)
    if metric == "error_rate":
        if not cohort.requests:
            return None
        return (cohort.errors + cohort.nonfinite) / cohort.requests
    if metric == "p95_ms":
        return interpolated_quantile(cohort.latency, 0.95)
    if metric == "p95_latency_ratio":
        a, b = interpolated_quantile(cohort.latency, 0.95), interpolated_quantile(control.latency, 0.95)
        if a is None or b is None or b <= 0:
            return None
        return a / b
    if metric == "psi":
        reference = data.reference_freqs
        if not reference and control.features and all(h.count for h in control.features):
            reference = [h.frequencies() for h in control.features]  # no manifest: compare with the control
        if reference and cohort.features and len(reference) == len(cohort.features):
            values = [
                v
                for v, h in zip(cohort.feature_psi(reference), cohort.features)
                if v is not None and h.count >= SAMPLES_PER_BIN * len(h.counts)
            ]
            return max(values) if values else None
        return data.cohort_psi_fallback
    if metric == "prediction_shift":
        k = max(len(cohort.classes), len(control.classes), 1)
        if min(sum(cohort.classes.values()), sum(control.classes.values())) < SAMPLES_PER_BIN * k:
            return None
        return distribution_shift(cohort.classes, control.classes)
    if metric == "shadow_agreement":
        return cohort.shadow.agreement if cohort.shadow else None
    raise ValueError(f"unknown metric {metric!r}")


@dataclass
class GateResult:
    """A gate's verdict: ``ok`` True (holds), False (violated), None (pending: not enough data)."""

    gate: Gate
    value: Optional[float]
    ok: Optional[bool]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        value = None if self.value is None or not math.isfinite(self.value) else round(self.value, 6)
        return {
            "name": self.gate.metric,
            "op": self.gate.op,
            "threshold": self.gate.threshold,
            "value": value,
            "ok": self.ok,
            "note": self.note,
        }


def evaluate_gates(
    gates: Sequence[Gate], data: GateInputs, min_requests: int, has_control: bool, shadow_stage: bool = False
) -> list[GateResult]:
    """Judge every gate. A gate is judged only once the cohort served ``min_requests`` (failures are
    judged at once); relative gates are not applicable when ``has_control`` is False.

    In a shadow stage the cohort still answers with the previous version and runs the candidate
    beside it: only ``update_failures`` and ``shadow_agreement`` apply; outside it
    ``shadow_agreement`` does not apply."""
    results = []
    enough = data.cohort.requests >= max(1, min_requests)
    for gate in gates:
        if gate.metric == "shadow_agreement" and not shadow_stage:
            results.append(GateResult(gate, None, True, "applies to the shadow stage"))
            continue
        if shadow_stage and gate.metric not in ("shadow_agreement", "update_failures"):
            results.append(GateResult(gate, None, True, "not judged in the shadow stage"))
            continue
        if gate.metric in RELATIVE and not has_control:
            results.append(GateResult(gate, None, True, "no control group"))
            continue
        value = metric_value(gate.metric, data)
        if gate.metric == "shadow_agreement":
            shadow_n = data.cohort.shadow.requests if data.cohort.shadow else 0
            if value is None or shadow_n < max(1, min_requests):
                results.append(GateResult(gate, value, None, "waiting for shadow requests"))
            else:
                results.append(GateResult(gate, value, gate.holds(value)))
        elif gate.metric == "update_failures":
            assert value is not None
            results.append(GateResult(gate, value, gate.holds(value), "; ".join(data.failure_notes[:3])))
        elif value is None:
            if gate.metric == "psi" and enough and not any(h.count for h in data.cohort.features):
                results.append(GateResult(gate, None, True, "no feature histograms reported"))
            elif gate.metric in ("psi", "prediction_shift"):
                results.append(GateResult(gate, None, None, f"waiting for {SAMPLES_PER_BIN} samples per bin"))
            else:
                results.append(GateResult(gate, None, None, "waiting for data"))
        elif not enough:
            results.append(GateResult(gate, value, None, f"waiting for {min_requests} requests"))
        else:
            results.append(GateResult(gate, value, gate.holds(value)))
    return results


def verdict(results: Sequence[GateResult]) -> Optional[bool]:
    """False if any gate is violated, True if all hold, None while any is pending."""
    if any(r.ok is False for r in results):
        return False
    if all(r.ok is True for r in results):
        return True
    return None


def describe_failure(results: Sequence[GateResult]) -> str:
    """One line naming each violated gate with its value, e.g. ``p95_latency_ratio=3.02 (limit <=1.2)``."""
    parts = [
        f"{r.gate.metric}={r.value:.4g} (limit {r.gate.op}{r.gate.threshold:g})" + (f" [{r.note}]" if r.note else "")
        for r in results
        if r.ok is False and r.value is not None
    ]
    return "; ".join(parts)
