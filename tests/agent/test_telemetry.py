"""Window accumulation (matches the protocol's Histogram.add), drift, and the disk spool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.agent.telemetry import Spool, WindowAccumulator, bin_counts, drift_of, feature_matrix
from device_agent.protocol.manifest import FeatureProfile, ReferenceProfile
from device_agent.protocol.messages import TelemetrySummary
from device_agent.protocol.sketch import LATENCY_BOUNDS_MS, Histogram, LatencyHistogram

EDGES = [0.25, 0.5, 0.75]


def ref(k: int = 2) -> ReferenceProfile:
    return ReferenceProfile([FeatureProfile(f"f{i}", EDGES, [0.25] * 4) for i in range(k)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e5, allow_nan=False), max_size=50))
def test_vectorised_latency_bins_equal_the_protocol_histogram(values: list[float]) -> None:
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    assert bin_counts(np.asarray(values, dtype=np.float64), np.asarray(LATENCY_BOUNDS_MS)) == h.counts


def test_window_summary_counts_classes_confidence_features_and_latency() -> None:
    acc = WindowAccumulator(ref(2))
    x = np.array([[0.1, 0.9], [0.6, 0.3], [0.5, 0.5]], dtype=np.float32)
    acc.record(x, outputs([0, 1, 1], [0.95, 0.55, 0.35]), 1.5)
    acc.record(x[:1], outputs([2], [0.8]), 3.0)
    acc.record_error(20.0, nonfinite=True)
    acc.record_rejected()
    start, end, s = acc.close(["a", "b", "c"], now=start_plus(acc, 10))
    assert (s.requests, s.errors, s.nonfinite, s.rejected, s.windows) == (3, 1, 1, 1, 1)
    assert s.classes == {"a": 1, "b": 2, "c": 1}
    assert s.latency.count == 3 and abs(s.latency.total_ms - 24.5) < 1e-9
    expected0 = Histogram.zero(EDGES)
    for v in (0.1, 0.6, 0.5, 0.1):
        expected0.add(v)
    assert s.features[0].counts == expected0.counts
    conf = Histogram.zero(s.confidence.edges)
    for c in (0.95, 0.55, 0.35, 0.8):
        conf.add(float(np.float32(c)))  # the model's outputs are float32
    assert s.confidence.counts == conf.counts
    assert s.rss_bytes_max > 1_000_000 and end - start == 10
    # the next window starts empty, and two windows merge into the window of both
    acc.record(x, outputs([0, 0, 0], [0.9, 0.9, 0.9]), 1.0)
    _, _, s2 = acc.close(["a", "b", "c"])
    merged = s + s2
    assert merged.requests == 4 and merged.classes == {"a": 4, "b": 2, "c": 1} and merged.windows == 2
    assert TelemetrySummary.from_dict(merged.to_dict()).to_dict() == merged.to_dict()


def outputs(classes: list[int], conf: list[float], k: int = 3) -> np.ndarray:
    """Classifier outputs whose argmax is ``classes`` and max is ``conf``."""
    y = np.full((len(classes), k), 0.01, dtype=np.float32)
    y[np.arange(len(classes)), classes] = conf
    return y


def test_many_calls_fold_into_exact_counts() -> None:
    acc = WindowAccumulator()
    rng = np.random.default_rng(3)
    want = {"a": 0, "b": 0, "c": 0}
    for _ in range(1000):
        c = int(rng.integers(0, 3))
        want["abc"[c]] += 1
        acc.record(np.zeros((1, 4), np.float32), outputs([c], [0.7]), 0.2)
    _, _, s = acc.close(["a", "b", "c"])
    assert s.classes == want and s.confidence.count == 1000 and s.requests == 1000


def start_plus(acc: WindowAccumulator, seconds: float) -> float:
    return acc.start + seconds


def test_drift_flag_follows_psi() -> None:
    acc = WindowAccumulator(ref(2))
    rng = np.random.default_rng(0)
    same = rng.uniform(0, 1, size=(400, 2)).astype(np.float32)
    acc.record(same, None, 1.0)
    _, _, s = acc.close([])
    psis, drift = drift_of(s, ref(2), 0.2)
    assert not drift and all(p is not None and p < 0.1 for p in psis)
    shifted = same.copy()
    shifted[:, 1] = 0.9  # feature 1 collapses into the last bin
    acc.record(shifted, None, 1.0)
    _, _, s = acc.close([])
    psis, drift = drift_of(s, ref(2), 0.2)
    assert drift and psis[1] > 0.2 > psis[0]


def test_pooled_features_use_the_protocol_pooling() -> None:
    r = ReferenceProfile(
        [FeatureProfile(f"p{i}", EDGES, [0.25] * 4) for i in range(4)], feature_kind="pooled", pooling="grid_mean:2x2"
    )
    x = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1)
    fm = feature_matrix(x, r)
    assert fm is not None and fm.shape == (2, 4)
    assert fm[0, 0] == x[0, :4, :4].mean() and fm[1, 3] == x[1, 4:, 4:].mean()
    assert feature_matrix(np.zeros((2, 3)), r) is None  # not an image
    r.pooling = "median:3"
    assert feature_matrix(x, r) is None


def test_spool_keeps_order_and_sequence_across_restarts(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_windows=10)
    seqs = [sp.next_seq() for _ in range(3)]
    for s in seqs:
        sp.put(s, f"w{s}".encode())
    assert sp.peek() == (0, b"w0")
    sp.ack(0)
    again = Spool(tmp_path, max_windows=10)
    assert len(again) == 2 and again.peek() == (1, b"w1")
    assert again.next_seq() == 3


def test_spool_drops_oldest_when_full_and_counts_it(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_windows=3)
    for _ in range(5):
        s = sp.next_seq()
        sp.put(s, str(s).encode())
    assert len(sp) == 3 and sp.dropped == 2
    got = []
    while (item := sp.peek()) is not None:
        got.append(item[0])
        sp.ack(item[0])
    assert got == [2, 3, 4]
    assert Spool(tmp_path, max_windows=3).dropped == 2


def test_concurrent_recording_and_closing_loses_nothing() -> None:
    import threading

    acc = WindowAccumulator()
    per_thread, n_threads = 3000, 4
    y = outputs([1], [0.9])
    x = np.zeros((1, 4), np.float32)

    def work() -> None:
        for i in range(per_thread):
            if i % 100 == 0:
                acc.record_error(1.0)
            else:
                acc.record(x, y, 0.5)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    windows = []
    while any(t.is_alive() for t in threads):
        windows.append(acc.close(["a", "b", "c"])[2])
    for t in threads:
        t.join()
    windows.append(acc.close(["a", "b", "c"])[2])
    total = TelemetrySummary()
    for w in windows:
        total = total + w
    assert total.requests == per_thread * n_threads and total.latency.count == total.requests
    assert total.errors == n_threads * (per_thread // 100)
    assert total.classes == {"b": total.requests - total.errors}
