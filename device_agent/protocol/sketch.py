"""Mergeable summaries: histograms with a zero, ``a + b`` of two windows is the window of both.

- :class:`LatencyHistogram` — fixed log-spaced buckets (the same on every device and every
  version), so p50/p95/p99 are derivable from any merge of windows.
- :class:`Histogram` — counts on given interior cut points (a feature's reference bin edges,
  the confidence bins).
- :func:`psi` — population stability index of observed counts against reference frequencies.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from device_agent.errors import SchemaError

# Latency buckets: 10 per decade from 10 us to 100 s; bucket i holds (bound[i-1], bound[i]];
# the last bucket holds everything above the last bound.
LATENCY_MIN_MS = 0.01
LATENCY_BUCKETS_PER_DECADE = 10
LATENCY_DECADES = 7
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(
    LATENCY_MIN_MS * 10 ** (i / LATENCY_BUCKETS_PER_DECADE)
    for i in range(LATENCY_BUCKETS_PER_DECADE * LATENCY_DECADES + 1)
)

CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))

PSI_EPSILON = 1e-4


@dataclass
class LatencyHistogram:
    """Counts of latencies (milliseconds) on :data:`LATENCY_BOUNDS_MS`."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    total_ms: float = 0.0

    def __post_init__(self) -> None:
        if len(self.counts) != len(LATENCY_BOUNDS_MS) + 1:
            raise SchemaError(
                f"latency histogram has {len(self.counts)} buckets, expected {len(LATENCY_BOUNDS_MS) + 1}"
            )

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, ms: float, n: int = 1) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDS_MS, ms)] += n
        self.total_ms += ms * n

    def __add__(self, other: LatencyHistogram) -> LatencyHistogram:
        return LatencyHistogram([a + b for a, b in zip(self.counts, other.counts)], self.total_ms + other.total_ms)

    def quantile(self, q: float) -> float | None:
        """Estimated q-quantile in ms (upper bound of the bucket that holds it); None when empty."""
        total = self.count
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)]
        return LATENCY_BOUNDS_MS[-1]

    @property
    def mean(self) -> float | None:
        return self.total_ms / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        # sparse: {bucket index: count}
        return {"buckets": {str(i): c for i, c in enumerate(self.counts) if c}, "total_ms": self.total_ms}

    @classmethod
    def from_dict(cls, data: Any) -> LatencyHistogram:
        if not isinstance(data, dict) or not isinstance(data.get("buckets", {}), dict):
            raise SchemaError("latency histogram: expected {'buckets': {index: count}}")
        counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for k, v in data.get("buckets", {}).items():
            try:
                i = int(k)
            except ValueError as exc:
                raise SchemaError(f"latency histogram: bucket index {k!r} is not an integer") from exc
            if not 0 <= i < len(counts) or not isinstance(v, int) or v < 0:
                raise SchemaError(f"latency histogram: bad bucket {k!r}: {v!r}")
            counts[i] = v
        total = data.get("total_ms", 0.0)
        if not isinstance(total, (int, float)):
            raise SchemaError("latency histogram: total_ms must be a number")
        return cls(counts, float(total))


@dataclass
class Histogram:
    """Counts on interior cut points ``edges`` (k edges -> k+1 bins: (-inf, e0], (e0, e1], ..., (e_k-1, inf))."""

    edges: list[float]
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.edges) + 1)
        if len(self.counts) != len(self.edges) + 1:
            raise SchemaError(f"histogram: {len(self.counts)} counts for {len(self.edges)} edges")
        if any(b < a for a, b in zip(self.edges, self.edges[1:])):
            raise SchemaError("histogram: edges must be non-decreasing")

    @classmethod
    def zero(cls, edges: Sequence[float]) -> Histogram:
        return cls(list(edges))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, value: float, n: int = 1) -> None:
        self.counts[bisect.bisect_left(self.edges, value)] += n

    def add_counts(self, counts: Iterable[int]) -> None:
        new = list(counts)
        if len(new) != len(self.counts):
            raise SchemaError(f"histogram: cannot add {len(new)} counts to {len(self.counts)} bins")
        self.counts = [a + b for a, b in zip(self.counts, new)]

    def __add__(self, other: Histogram) -> Histogram:
        if list(self.edges) != list(other.edges):
            raise SchemaError("histogram: cannot merge histograms with different edges")
        return Histogram(list(self.edges), [a + b for a, b in zip(self.counts, other.counts)])

    def frequencies(self) -> list[float]:
        total = self.count
        return [c / total for c in self.counts] if total else [0.0] * len(self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: Any) -> Histogram:
        if not isinstance(data, dict):
            raise SchemaError("histogram: expected an object with edges and counts")
        edges, counts = data.get("edges"), data.get("counts", [])
        if not isinstance(edges, list) or not all(isinstance(e, (int, float)) for e in edges):
            raise SchemaError("histogram: edges must be a list of numbers")
        if not isinstance(counts, list) or not all(isinstance(c, int) and c >= 0 for c in counts):
            raise SchemaError("histogram: counts must be a list of non-negative integers")
        return cls([float(e) for e in edges], list(counts))


def psi(reference: Sequence[float], observed_counts: Sequence[int], epsilon: float = PSI_EPSILON) -> float | None:
    """Population stability index of observed counts against reference frequencies.

    ``sum((o - r) * ln(o / r))`` with both sides floored at ``epsilon``. None when nothing was
    observed. Rule of thumb: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 drift.
    Raises SchemaError if the lengths differ.
    """
    if len(reference) != len(observed_counts):
        raise SchemaError(f"psi: reference has {len(reference)} bins, observed {len(observed_counts)}")
    total = sum(observed_counts)
    if total == 0:
        return None
    ref_total = sum(reference) or 1.0
    value = 0.0
    for r, c in zip(reference, observed_counts):
        rp = max(r / ref_total, epsilon)
        op = max(c / total, epsilon)
        value += (op - rp) * math.log(op / rp)
    return value


def distribution_shift(a: dict[str, int], b: dict[str, int]) -> float | None:
    """Total variation distance between two class-count maps (0 = same, 1 = disjoint); None if either is empty."""
    ta, tb = sum(a.values()), sum(b.values())
    if ta == 0 or tb == 0:
        return None
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / ta - b.get(k, 0) / tb) for k in keys)
