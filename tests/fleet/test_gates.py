"""Gate parsing and evaluation on merged telemetry (pure)."""

from __future__ import annotations

import pytest

from device_agent.protocol import LatencyHistogram, ShadowSummary, TelemetrySummary
from edgeml.errors import UsageError
from edgeml.fleet.gates import (
    DEFAULT_GATES,
    Gate,
    GateInputs,
    describe_failure,
    evaluate_gates,
    interpolated_quantile,
    parse_gates,
    verdict,
)


def summary(n: int, ms: float, errors: int = 0, classes: dict[str, int] | None = None) -> TelemetrySummary:
    lat = LatencyHistogram()
    lat.add(ms, n)
    return TelemetrySummary(requests=n, errors=errors, latency=lat, classes=classes or {"a": n // 2, "b": n - n // 2})


def test_parse_and_describe() -> None:
    g = Gate.parse(" p95_latency_ratio <= 1.2 ")
    assert (g.metric, g.op, g.threshold) == ("p95_latency_ratio", "<=", 1.2)
    assert str(g) == "p95_latency_ratio<=1.2"
    assert g.holds(1.2) and not g.holds(1.21)


@pytest.mark.parametrize("text", ["latency<=1", "p95_ms<<3", "error_rate<=abc", "psi<=inf", ""])
def test_bad_gates_raise_usage_error_with_hint(text: str) -> None:
    with pytest.raises(UsageError) as info:
        Gate.parse(text)
    assert info.value.hint


def test_defaults_and_override_and_shadow() -> None:
    gates = parse_gates(None)
    assert [str(g) for g in gates] == [str(Gate.parse(t)) for t in DEFAULT_GATES]
    gates = parse_gates(["error_rate<=0.01", "error_rate<=0.05"], shadow_first=True)
    assert [str(g) for g in gates] == ["error_rate<=0.05", "shadow_agreement>=0.97"]


def test_interpolated_quantile_is_continuous_inside_a_bucket() -> None:
    h = LatencyHistogram()
    for i in range(100):
        h.add(1.0 + i * 0.002)  # all inside one or two buckets
    q = interpolated_quantile(h, 0.95)
    assert q is not None and 1.0 < q < 1.3
    assert interpolated_quantile(LatencyHistogram(), 0.95) is None


def test_healthy_cohort_passes_every_default_gate() -> None:
    data = GateInputs(cohort=summary(500, 2.0), control=summary(2000, 2.0))
    results = evaluate_gates(parse_gates(None), data, min_requests=100, has_control=True)
    assert verdict(results) is True, [r.to_dict() for r in results]


def test_slow_cohort_fails_latency_ratio_with_values() -> None:
    data = GateInputs(cohort=summary(500, 6.0), control=summary(2000, 2.0))
    results = evaluate_gates(parse_gates(None), data, min_requests=100, has_control=True)
    assert verdict(results) is False
    failed = [r for r in results if r.ok is False]
    assert [r.gate.metric for r in failed] == ["p95_latency_ratio"]
    assert 2.5 < failed[0].value < 3.5  # type: ignore[operator]
    assert describe_failure(results).startswith("p95_latency_ratio=")


def test_shifted_predictions_fail_prediction_shift() -> None:
    data = GateInputs(cohort=summary(500, 2.0, classes={"a": 450, "b": 50}), control=summary(500, 2.0))
    results = evaluate_gates(parse_gates(None), data, min_requests=100, has_control=True)
    assert {r.gate.metric for r in results if r.ok is False} == {"prediction_shift"}


def test_pending_until_min_requests_but_failures_judged_at_once() -> None:
    data = GateInputs(cohort=summary(20, 9.0), control=summary(2000, 2.0))
    assert verdict(evaluate_gates(parse_gates(None), data, 100, True)) is None
    data.update_failures = 1
    assert verdict(evaluate_gates(parse_gates(None), data, 100, True)) is False


def test_error_rate_counts_nonfinite_and_no_control_is_not_applicable() -> None:
    s = summary(1000, 2.0, errors=5)
    s.nonfinite = 10
    results = evaluate_gates(parse_gates(None), GateInputs(cohort=s), 100, has_control=False)
    by = {r.gate.metric: r for r in results}
    assert by["error_rate"].value == pytest.approx(0.015) and by["error_rate"].ok is False
    assert by["p95_latency_ratio"].ok is True and by["p95_latency_ratio"].note == "no control group"


def test_psi_against_reference_and_fallback() -> None:
    from device_agent.protocol import Histogram

    s = summary(1000, 2.0)
    s.features = [Histogram([0.0], [900, 100])]
    data = GateInputs(cohort=s, reference_freqs=[[0.5, 0.5]])
    by = {r.gate.metric: r for r in evaluate_gates(parse_gates(None), data, 100, False)}
    assert by["psi"].ok is False and by["psi"].value > 0.2  # type: ignore[operator]
    # too few samples for a PSI worth judging: pending, not failed (small samples look drifted)
    s.features = [Histogram([0.0], [30, 10])]
    by = {r.gate.metric: r for r in evaluate_gates(parse_gates(None), data, 100, False)}
    assert by["psi"].ok is None and by["psi"].value is None
    # without a manifest reference the control group's inputs are the reference
    s.features = [Histogram([0.0], [500, 500])]
    ctl = summary(1000, 2.0)
    ctl.features = [Histogram([0.0], [950, 50])]
    by = {r.gate.metric: r for r in evaluate_gates(parse_gates(None), GateInputs(cohort=s, control=ctl), 100, True)}
    assert by["psi"].ok is False
    s.features = []
    data = GateInputs(cohort=s, cohort_psi_fallback=0.05)
    by = {r.gate.metric: r for r in evaluate_gates(parse_gates(None), data, 100, False)}
    assert by["psi"].ok is True and by["psi"].value == 0.05


def test_shadow_stage_judges_agreement_only() -> None:
    s = summary(1000, 2.0)
    s.shadow = ShadowSummary("2.0.0", requests=200, agreements=150)
    data = GateInputs(cohort=s, control=summary(10, 50.0))
    results = evaluate_gates(parse_gates(None, shadow_first=True), data, 100, True, shadow_stage=True)
    by = {r.gate.metric: r for r in results}
    assert by["shadow_agreement"].ok is False and by["shadow_agreement"].value == 0.75
    assert by["p95_latency_ratio"].ok is True  # not judged in the shadow stage
