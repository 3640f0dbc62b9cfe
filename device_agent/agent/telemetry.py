"""Telemetry windows (pure accumulation) and the disk spool that survives outages.

:class:`WindowAccumulator` is on the predict hot path, so recording is a few list appends
under a lock; the histograms (latency on the fixed log buckets, confidence, per-feature on the
reference profile's edges) are computed with numpy when the window closes.

:class:`Spool` keeps every closed window on disk until the broker acknowledged it (QoS 1), in
sequence order, bounded: when full the oldest are dropped and the drop is counted.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Optional

import numpy as np

from device_agent.errors import DataError
from device_agent.fsutil import atomic_write_bytes, atomic_write_json, read_json
from device_agent.protocol.features import pooled_statistics
from device_agent.protocol.manifest import ReferenceProfile
from device_agent.protocol.messages import ShadowSummary, TelemetrySummary
from device_agent.protocol.sketch import CONFIDENCE_EDGES, LATENCY_BOUNDS_MS, Histogram, LatencyHistogram

_LAT_BOUNDS = np.asarray(LATENCY_BOUNDS_MS)
_CONF_EDGES = np.asarray(CONFIDENCE_EDGES)
FOLD = 256  # classifier outputs counted per vectorised fold


def feature_matrix(x: np.ndarray, reference: ReferenceProfile) -> Optional[np.ndarray]:
    """The per-sample features the reference profile describes, shape ``(n, k)``; None when the
    profile has no features or this input cannot yield them.

    ``feature_kind == "raw"``: the first ``k`` columns of the flattened sample. ``"pooled"``:
    :func:`device_agent.protocol.features.pooled_statistics` with the profile's ``pooling``
    (e.g. ``"grid_mean:2x2"``), exactly as the workstation computed the reference.
    """
    k = len(reference.features)
    if k == 0 or x.ndim == 0 or x.shape[0] == 0:
        return None
    flat = x.reshape(x.shape[0], -1)
    if reference.feature_kind == "raw":
        return flat[:, :k] if flat.shape[1] >= k else None
    if reference.feature_kind == "pooled" and reference.pooling:
        try:
            pooled = pooled_statistics(x, reference.pooling)
        except DataError:
            return None
        return pooled if pooled.shape[1] == k else None
    return None


def bin_counts(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts per bin for interior cut points (bin i holds (edges[i-1], edges[i]]), like
    :meth:`Histogram.add`."""
    idx = np.searchsorted(edges, values, side="left")
    return [int(c) for c in np.bincount(idx, minlength=len(edges) + 1)]


def process_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class WindowAccumulator:
    """Collects one window. Thread-safe; ``close()`` returns the summary and starts a new window.

    The hot path takes no lock: latencies, classifier outputs and sampled inputs go to deques
    (atomic appends); ``close()`` pops exactly what was there when it looked, so a call that
    races it is counted in the next window, never lost. Folds and counters take the lock."""

    def __init__(self, reference: Optional[ReferenceProfile] = None, sample_max: int = 4096) -> None:
        self.sample_max = sample_max
        self.lock = threading.Lock()
        self._lat: deque[float] = deque()
        self._outs: deque[np.ndarray] = deque()  # classifier outputs not yet folded into the counts
        self._inputs: deque[np.ndarray] = deque()
        self.reference = reference or ReferenceProfile()
        self._edges = [np.asarray(e, dtype=np.float64) for e in self.reference.feature_edges]
        self._reset()
        self._cpu0 = time.process_time()

    def set_reference(self, reference: ReferenceProfile) -> None:
        """Use another model's reference profile (from the next window on)."""
        with self.lock:
            self.reference = reference
            self._edges = [np.asarray(e, dtype=np.float64) for e in reference.feature_edges]
            self._inputs.clear()
            self._rows = 0

    def _reset(self) -> None:
        self.start = time.time()
        self.errors = 0
        self.rejected = 0
        self.nonfinite = 0
        self._class_counts: dict[int, int] = {}
        self._conf_counts = np.zeros(len(CONFIDENCE_EDGES) + 1, dtype=np.int64)
        self._rows = 0
        self.shadow: Optional[ShadowSummary] = None
        self._shadow_latency: list[float] = []

    @property
    def requests(self) -> int:
        """Calls recorded in the open window so far."""
        return len(self._lat)

    # ------------------------------------------------------------------ hot path
    def record(self, x: np.ndarray, outputs: Optional[np.ndarray], latency_ms: float) -> None:
        """One successful predict call on a batch; ``outputs`` are a classifier's (else None).
        Classes and confidences are counted in vectorised folds of FOLD calls."""
        self._lat.append(latency_ms)
        if outputs is not None:
            outs = self._outs
            outs.append(outputs)
            if len(outs) >= FOLD:
                with self.lock:
                    self._fold()
        if self._edges and self._rows < self.sample_max:
            self._inputs.append(x)
            self._rows += x.shape[0]

    def _fold(self) -> None:
        """Count the pending outputs' classes (argmax) and confidences (max). Holds the lock."""
        pending = self._outs
        outs = [pending.popleft() for _ in range(len(pending))]
        if not outs:
            return
        try:
            flat = np.concatenate([o.reshape(o.shape[0], -1) for o in outs])
        except ValueError:
            return
        classes = flat.argmax(axis=1)
        conf = flat[np.arange(flat.shape[0]), classes]
        for i, c in enumerate(np.bincount(classes).tolist()):
            if c:
                self._class_counts[i] = self._class_counts.get(i, 0) + c
        self._conf_counts += np.bincount(
            np.searchsorted(_CONF_EDGES, conf, side="left"), minlength=len(_CONF_EDGES) + 1
        )

    def record_error(self, latency_ms: float, nonfinite: bool = False) -> None:
        """A predict call that failed in the runtime or produced NaN/inf outputs."""
        with self.lock:
            self.errors += 1
            if nonfinite:
                self.nonfinite += 1
            self._lat.append(latency_ms)

    def record_rejected(self) -> None:
        """Bad input refused before the model saw it (not a request the model served)."""
        with self.lock:
            self.rejected += 1

    def record_shadow(self, version: str, agreements: int, n: int, latency_ms: float) -> None:
        with self.lock:
            if self.shadow is None or self.shadow.version != version:
                self.shadow = ShadowSummary(version=version)
                self._shadow_latency = []
            self.shadow.requests += n
            self.shadow.agreements += agreements
            self._shadow_latency.append(latency_ms)

    # ------------------------------------------------------------------ close
    def close(self, labels: list[str], now: Optional[float] = None) -> tuple[float, float, TelemetrySummary]:
        """End the window: ``(start, end, summary)``. ``labels`` name class indices."""
        with self.lock:
            self._fold()
            lat_q, in_q = self._lat, self._inputs
            latency = [lat_q.popleft() for _ in range(len(lat_q))]
            inputs = [in_q.popleft() for _ in range(len(in_q))]
            start, class_idx, conf_counts = self.start, self._class_counts, self._conf_counts
            edges, shadow, shadow_lat = self._edges, self.shadow, self._shadow_latency
            requests, errors, rejected, nonfinite = len(latency), self.errors, self.rejected, self.nonfinite
            self._reset()
        end = time.time() if now is None else now
        lat = LatencyHistogram()
        if latency:
            arr = np.asarray(latency, dtype=np.float64)
            lat = LatencyHistogram(bin_counts(arr, _LAT_BOUNDS), float(arr.sum()))
        class_counts: dict[str, int] = {}
        for i, c in sorted(class_idx.items()):
            key = labels[i] if i < len(labels) else str(i)
            class_counts[key] = class_counts.get(key, 0) + int(c)
        confidence = Histogram(list(CONFIDENCE_EDGES), [int(c) for c in conf_counts.tolist()])
        features = [Histogram.zero(e.tolist()) for e in edges]
        if inputs and edges:
            try:
                fm = feature_matrix(np.concatenate(inputs), self.reference)
            except ValueError:
                fm = None
            if fm is not None and fm.shape[1] == len(edges):
                features = [Histogram(e.tolist(), bin_counts(fm[:, j], e)) for j, e in enumerate(edges)]
        if shadow is not None and shadow_lat:
            arr = np.asarray(shadow_lat, dtype=np.float64)
            shadow.latency = LatencyHistogram(bin_counts(arr, _LAT_BOUNDS), float(arr.sum()))
        cpu = time.process_time()
        summary = TelemetrySummary(
            requests=requests,
            errors=errors,
            rejected=rejected,
            nonfinite=nonfinite,
            latency=lat,
            classes=class_counts,
            confidence=confidence,
            features=features,
            shadow=shadow,
            rss_bytes_max=process_rss_bytes(),
            cpu_seconds=cpu - self._cpu0,
            duration_s=max(0.0, end - start),
            windows=1,
        )
        self._cpu0 = cpu
        return start, end, summary


def drift_of(summary: TelemetrySummary, reference: ReferenceProfile, threshold: float) -> tuple[list[Any], bool]:
    """(PSI per feature, drift flag) of a window against the reference profile."""
    if not reference.features or len(summary.features) != len(reference.features):
        return [], False
    if not any(h.count for h in summary.features):
        return [None] * len(summary.features), False
    values = summary.feature_psi(reference.feature_freqs)
    return values, any(v is not None and v > threshold for v in values)


class Spool:
    """Closed windows on disk until acknowledged: ``<seq>.json`` files plus ``meta.json``
    (next sequence number, dropped count). Thread-safe."""

    def __init__(self, root: Path, max_windows: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_windows = max_windows
        self.lock = threading.Lock()
        try:
            meta = read_json(self.root / "meta.json") or {}
        except (OSError, ValueError):
            meta = {}
        self._pending: deque[int] = deque(sorted(int(p.stem) for p in self.root.glob("*.json") if p.stem.isdigit()))
        last = self._pending[-1] + 1 if self._pending else 0
        self._next = max(int(meta.get("next_seq", 0)), last)
        self.dropped = int(meta.get("dropped", 0))

    def _save_meta(self) -> None:
        atomic_write_json(self.root / "meta.json", {"next_seq": self._next, "dropped": self.dropped}, fsync=False)

    def next_seq(self) -> int:
        """Reserve the next sequence number (persisted, so it keeps increasing across restarts)."""
        with self.lock:
            seq = self._next
            self._next += 1
            self._save_meta()
            return seq

    def put(self, seq: int, payload: bytes) -> None:
        """Store one window; drop the oldest ones beyond ``max_windows`` (counted in ``dropped``)."""
        with self.lock:
            atomic_write_bytes(self.root / f"{seq:012d}.json", payload, fsync=False)
            self._pending.append(seq)
            while len(self._pending) > self.max_windows:
                old = self._pending.popleft()
                try:
                    (self.root / f"{old:012d}.json").unlink()
                except FileNotFoundError:
                    pass
                self.dropped += 1
            self._save_meta()

    def peek(self) -> Optional[tuple[int, bytes]]:
        """The oldest pending window, or None."""
        with self.lock:
            while self._pending:
                seq = self._pending[0]
                try:
                    return seq, (self.root / f"{seq:012d}.json").read_bytes()
                except FileNotFoundError:
                    self._pending.popleft()
            return None

    def ack(self, seq: int) -> None:
        """The broker acknowledged ``seq``: forget it."""
        with self.lock:
            if self._pending and self._pending[0] == seq:
                self._pending.popleft()
            elif seq in self._pending:
                self._pending.remove(seq)
            try:
                (self.root / f"{seq:012d}.json").unlink()
            except FileNotFoundError:
                pass

    def __len__(self) -> int:
        return len(self._pending)
