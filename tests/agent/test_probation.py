"""Probation verdicts (pure)."""

from __future__ import annotations

from device_agent.agent.probation import FAIL, PASS, Probation


def make(**kw: object) -> Probation:
    args: dict[str, object] = {"requests_needed": 10, "seconds": 30.0, "started": 0.0, "latency_budget_ms": 50.0}
    args.update(kw)
    return Probation(**args)  # type: ignore[arg-type]


def test_passes_after_n_requests_or_t_seconds() -> None:
    p = make()
    for _ in range(9):
        p.observe(2.0)
    assert p.verdict(1.0) is None
    p.observe(2.0)
    assert p.verdict(1.0) == (PASS, "10 requests in 1.0s, 0 errors")
    assert make().verdict(31.0) is not None and make().verdict(31.0)[0] == PASS  # type: ignore[index]


def test_one_nan_fails_at_once_and_errors_fail_on_rate() -> None:
    p = make()
    p.observe(1.0, "bad", nonfinite=True)
    v = p.verdict(0.1)
    assert v is not None and v[0] == FAIL and "NaN" in v[1]
    p = make(requests_needed=100)
    for i in range(10):
        p.observe(1.0, "boom" if i % 3 == 0 else None)
    v = p.verdict(0.1)
    assert v is not None and v[0] == FAIL and "error rate 40%" in v[1] and "boom" in v[1]


def test_latency_is_judged_by_p95_with_enough_samples_else_the_median() -> None:
    p = make(requests_needed=5)
    for ms in (3.0, 3.0, 70.0, 3.0, 3.0):  # one stall among few requests: not a slow model
        p.observe(ms)
    assert p.verdict(1.0) == (PASS, "5 requests in 1.0s, 0 errors")
    p = make(requests_needed=5)
    for _ in range(5):
        p.observe(80.0)
    v = p.verdict(1.0)
    assert v is not None and v[0] == FAIL and "median latency 80.00 ms" in v[1]
    p = make(requests_needed=40)
    for i in range(40):
        p.observe(70.0 if i % 10 == 0 else 3.0)  # 10% slow: p95 over budget
    v = p.verdict(1.0)
    assert v is not None and v[0] == FAIL and "p95 latency" in v[1]
