"""Mergeable summaries: zero, associativity, quantiles, PSI."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.errors import SchemaError
from device_agent.protocol import (
    LATENCY_BOUNDS_MS,
    Histogram,
    LatencyHistogram,
    TelemetrySummary,
    distribution_shift,
    psi,
)

latencies = st.lists(st.floats(min_value=0.001, max_value=5e5, allow_nan=False), max_size=50)


def hist_of(values: list[float]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    return h


@given(latencies, latencies, latencies)
def test_latency_merge_is_associative_with_zero(a: list[float], b: list[float], c: list[float]) -> None:
    ha, hb, hc = hist_of(a), hist_of(b), hist_of(c)
    assert ((ha + hb) + hc).counts == (ha + (hb + hc)).counts
    assert (LatencyHistogram() + ha).counts == ha.counts
    assert (ha + hb).counts == hist_of(a + b).counts
    assert (ha + hb).count == len(a) + len(b)


@given(st.lists(st.floats(min_value=0.02, max_value=9e4, allow_nan=False), min_size=1, max_size=200))
def test_quantile_is_within_one_bucket_of_the_exact_value(values: list[float]) -> None:
    h = hist_of(values)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        est = h.quantile(q)
        assert est is not None
        # the estimate is the upper bound of the bucket holding the exact value: >= exact, < one bucket above
        assert exact <= est * (1 + 1e-9)
        assert est <= exact * 10 ** (1 / 10) * (1 + 1e-9)


def test_latency_histogram_round_trip_and_bad_input() -> None:
    h = hist_of([0.5, 1.0, 20.0, 1e9])
    again = LatencyHistogram.from_dict(h.to_dict())
    assert again.counts == h.counts and again.count == 4
    assert again.quantile(1.0) == LATENCY_BOUNDS_MS[-1]
    with pytest.raises(SchemaError):
        LatencyHistogram.from_dict({"buckets": {"999": 1}})
    with pytest.raises(SchemaError):
        LatencyHistogram.from_dict({"buckets": {"x": 1}})
    assert LatencyHistogram().quantile(0.5) is None


def test_histogram_bins_and_merge_requires_same_edges() -> None:
    h = Histogram.zero([0.0, 1.0])
    for v in (-5, 0.0, 0.5, 1.0, 3):
        h.add(v)
    assert h.counts == [2, 2, 1]  # (-inf,0], (0,1], (1,inf)
    with pytest.raises(SchemaError):
        h + Histogram.zero([0.0, 2.0])
    with pytest.raises(SchemaError):
        Histogram([1.0, 0.0])


def test_psi_zero_for_same_distribution_and_large_for_shift() -> None:
    ref = [0.25, 0.25, 0.25, 0.25]
    same = psi(ref, [250, 250, 250, 250])
    shifted = psi(ref, [0, 0, 100, 900])
    assert same is not None and same < 1e-9
    assert shifted is not None and shifted > 0.2
    assert psi(ref, [0, 0, 0, 0]) is None
    with pytest.raises(SchemaError):
        psi(ref, [1, 2])


def test_distribution_shift() -> None:
    assert distribution_shift({"a": 5, "b": 5}, {"a": 1, "b": 1}) == pytest.approx(0.0)
    assert distribution_shift({"a": 5}, {"b": 3}) == pytest.approx(1.0)
    assert distribution_shift({}, {"a": 1}) is None


counts = st.integers(min_value=0, max_value=1000)


@st.composite
def summaries(draw: st.DrawFn) -> TelemetrySummary:
    s = TelemetrySummary.zero([[0.0, 1.0], [5.0]])
    s.requests = draw(counts)
    s.errors = draw(counts)
    for v in draw(latencies):
        s.latency.add(v)
    for label in draw(st.lists(st.sampled_from("abc"), max_size=10)):
        s.classes[label] = s.classes.get(label, 0) + 1
    for v in draw(st.lists(st.floats(-3, 8), max_size=10)):
        s.features[0].add(v)
        s.features[1].add(v)
    s.rss_bytes_max = draw(counts)
    s.windows = 1
    return s


def canon(s: TelemetrySummary) -> dict[str, object]:
    """to_dict with float sums rounded: float addition is associative only up to rounding."""
    d = s.to_dict()
    d["latency"]["total_ms"] = round(d["latency"]["total_ms"], 3)
    return d


@given(summaries(), summaries(), summaries())
def test_telemetry_summary_is_a_monoid(a: TelemetrySummary, b: TelemetrySummary, c: TelemetrySummary) -> None:
    left, right = (a + b) + c, a + (b + c)
    assert canon(left) == canon(right)
    zero = TelemetrySummary.zero()
    assert (zero + a).to_dict() == a.to_dict()
    assert (a + zero).to_dict() == a.to_dict()
    assert (a + b).requests == a.requests + b.requests
    assert (a + b).rss_bytes_max == max(a.rss_bytes_max, b.rss_bytes_max)
    assert TelemetrySummary.from_dict((a + b).to_dict()).to_dict() == (a + b).to_dict()


def test_feature_psi_checks_reference_length() -> None:
    s = TelemetrySummary.zero([[0.0]])
    s.features[0].add_counts([10, 0])
    out = s.feature_psi([[0.5, 0.5]])
    assert out[0] is not None and out[0] > 0.2
    with pytest.raises(SchemaError):
        s.feature_psi([[0.5, 0.5], [0.5, 0.5]])
