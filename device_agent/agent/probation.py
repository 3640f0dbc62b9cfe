"""Probation verdicts (pure): serve N requests or T seconds while watching errors, NaN/inf
outputs and latency against the manifest's budget."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Optional

PASS = "pass"
FAIL = "fail"
MIN_REQUESTS_FOR_RATE = 5
MIN_SAMPLES_FOR_P95 = 20  # with fewer latencies one stall would decide: judge the median instead


@dataclass
class Probation:
    """Observations of a candidate model on live traffic. Thread-safe ``observe``."""

    requests_needed: int
    seconds: float
    started: float
    max_error_rate: float = 0.05
    max_nonfinite: int = 0
    latency_budget_ms: Optional[float] = None
    requests: int = 0
    errors: int = 0
    nonfinite: int = 0
    last_error: str = ""
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, latency_ms: float, error: Optional[str] = None, nonfinite: bool = False) -> None:
        with self.lock:
            self.requests += 1
            self.latencies.append(latency_ms)
            if nonfinite:
                self.nonfinite += 1
            if error is not None:
                self.errors += 1
                self.last_error = error

    def verdict(self, now: float) -> Optional[tuple[str, str]]:
        """None while still watching; (PASS|FAIL, reason) once decided."""
        with self.lock:
            if self.nonfinite > self.max_nonfinite:
                return FAIL, (
                    f"{self.nonfinite} of {self.requests} requests produced NaN or infinite outputs "
                    f"(allowed {self.max_nonfinite})"
                )
            if self.errors and self.requests >= MIN_REQUESTS_FOR_RATE or self.errors >= MIN_REQUESTS_FOR_RATE:
                rate = self.errors / max(self.requests, 1)
                if rate > self.max_error_rate:
                    return FAIL, (
                        f"error rate {rate:.0%} ({self.errors} of {self.requests} requests) exceeds "
                        f"{self.max_error_rate:.0%}; last error: {self.last_error}"
                    )
            done = self.requests >= self.requests_needed or now - self.started >= self.seconds
            if not done:
                return None
            if self.latency_budget_ms is not None and self.latencies:
                lat = sorted(self.latencies)
                q, name = (0.95, "p95") if len(lat) >= MIN_SAMPLES_FOR_P95 else (0.5, "median")
                value = lat[max(0, math.ceil(q * len(lat)) - 1)]
                if value > self.latency_budget_ms:
                    return FAIL, (
                        f"{name} latency {value:.2f} ms over {len(lat)} requests exceeds the budget of "
                        f"{self.latency_budget_ms:.2f} ms"
                    )
            return PASS, f"{self.requests} requests in {now - self.started:.1f}s, {self.errors} errors"
