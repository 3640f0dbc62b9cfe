"""Fleet views built from the store: the device table, time series per version, events, the
telemetry summary of a model, and the Prometheus text. Shared by the HTTP API and the CLI."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from device_agent.errors import SchemaError
from device_agent.protocol import Histogram, TelemetrySummary, psi
from edgeml.fleet.gates import SAMPLES_PER_BIN, interpolated_quantile
from edgeml.fleet.store import Store

RECENT_S = 120.0


class DriftCache:
    """Per-device input drift over the last ``window_s``: the device's feature histograms merged
    across its windows, PSI per feature against the release's reference profile (or, without one,
    against the inputs of every device on that version), judged only with ``SAMPLES_PER_BIN`` samples
    per bin. One short window's PSI is dominated by sampling noise; this is not. Incremental: each
    telemetry row is read once."""

    def __init__(self, store: Store, manifest_lookup: Optional[Callable[[str, str], Any]] = None,
                 window_s: float = RECENT_S, threshold: float = 0.2) -> None:
        self.store = store
        self.lookup = manifest_lookup
        self.window_s = window_s
        self.threshold = threshold
        self.after_id = 0
        self.rows: dict[str, deque[tuple[float, str, str, list[Histogram]]]] = {}
        self.refs: dict[tuple[str, str], Optional[list[list[float]]]] = {}
        self.lock = threading.Lock()

    def reference(self, model: str, version: str) -> Optional[list[list[float]]]:
        """The release's per-feature reference frequencies (cached), or None without a profile."""
        key = (model, version)
        if key not in self.refs:
            ref = None
            if self.lookup is not None:
                try:
                    m = self.lookup(model, version)
                    if m is not None and m.reference.features:
                        ref = m.reference.feature_freqs
                except Exception:  # noqa: BLE001 - no manifest: compare with the fleet instead
                    ref = None
            self.refs[key] = ref
        return self.refs[key]

    def values(self, now: Optional[float] = None) -> dict[str, tuple[Optional[float], bool]]:
        """device id -> (largest feature PSI or None, drift flag)."""
        now = time.time() if now is None else now
        start = now - self.window_s
        with self.lock:
            for r in self.store.telemetry_rows(since=start, after_id=self.after_id, limit=200_000,
                                               columns=("id", "device_id", "model", "version", "window_end", "body")):
                self.after_id = max(self.after_id, r["id"])
                try:
                    summary = json.loads(r["body"]).get("summary") or {}
                    feats = [Histogram.from_dict({"edges": e, "counts": c})
                             for e, c in zip(summary.get("feature_edges") or [], summary.get("features") or [])]
                except (SchemaError, ValueError, TypeError):
                    continue
                if feats and r["model"] and r["version"]:
                    self.rows.setdefault(r["device_id"], deque()).append(
                        (r["window_end"], r["model"], r["version"], feats))
            merged: dict[str, tuple[str, str, list[Histogram]]] = {}
            for dev, q in self.rows.items():
                while q and q[0][0] < start:
                    q.popleft()
                if not q:
                    continue
                model, version = q[-1][1], q[-1][2]
                acc: Optional[list[Histogram]] = None
                for _, m, v, feats in q:
                    if (m, v) != (model, version):
                        continue
                    try:
                        acc = feats if acc is None else [a + b for a, b in zip(acc, feats)]
                    except SchemaError:
                        acc = feats
                if acc is not None:
                    merged[dev] = (model, version, acc)
        fleet_wide: dict[tuple[str, str], list[Histogram]] = {}
        for model, version, feats in merged.values():
            key = (model, version)
            try:
                fleet_wide[key] = feats if key not in fleet_wide else [a + b for a, b in zip(fleet_wide[key], feats)]
            except SchemaError:
                continue
        out: dict[str, tuple[Optional[float], bool]] = {}
        for dev, (model, version, feats) in merged.items():
            ref = self.reference(model, version)
            if ref is None and (model, version) in fleet_wide:
                # no manifest: the other devices on this version are the reference (leave this one out)
                others = [
                    [a - b for a, b in zip(f.counts, h.counts)] for f, h in zip(fleet_wide[(model, version)], feats)
                ]
                if all(sum(c) > 0 for c in others):
                    ref = [[c / sum(cs) for c in cs] for cs in others]
            if not ref or len(ref) != len(feats):
                continue
            values = [psi(rf, h.counts) for rf, h in zip(ref, feats) if h.count >= SAMPLES_PER_BIN * len(h.counts)]
            finite = [v for v in values if v is not None]
            # without enough samples yet: no verdict (rather than one short window's noise)
            out[dev] = (max(finite), max(finite) > self.threshold) if finite else (None, False)
        return out


def fleet_devices(
    store: Store, now: Optional[float] = None, recent_s: float = RECENT_S, drift: Optional[DriftCache] = None
) -> list[dict[str, Any]]:
    """Every device (docs/INTERFACES.md §4 ``/api/fleet``): state plus its latest p95, and its input
    drift (merged over the recent windows when ``drift`` is given, else the last window's)."""
    now = time.time() if now is None else now
    latest = store.latest_telemetry(now - recent_s)
    merged = drift.values(now) if drift is not None else {}
    out = []
    for d in store.devices():
        t = dict(latest.get(d["device_id"], {}))
        if d["device_id"] in merged:  # devices that report feature histograms
            t["psi_max"], t["drift"] = merged[d["device_id"]]
        out.append(
            {
                "device_id": d["device_id"],
                "online": bool(d["online"]),
                "model": d["model"],
                "version": d["version"],
                "previous_version": d["previous_version"],
                "update_state": d["update_state"],
                "group": d["group_name"],
                "last_seen": d["last_seen"],
                "p95_ms": t.get("p95_ms"),
                "psi_max": t.get("psi_max"),
                "drift": bool(t.get("drift", False)),
                "desired_version": d["desired_version"],
                "last_error": d["last_error"],
            }
        )
    return out


def _finite(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else round(x, 6)


ReferenceLookup = Callable[[str, str], Optional[list[list[float]]]]


class _Bucket:
    """Merged telemetry of one (model, version) over one time step: latency, counts, and the feature
    histograms of every window in it, so drift is judged on the merge, not on one window's noise."""

    __slots__ = ("lat", "n", "e", "feats", "reported")

    def __init__(self) -> None:
        self.lat: Any = None
        self.n = 0
        self.e = 0
        self.feats: Optional[list[Histogram]] = None
        self.reported: Optional[float] = None

    def add(self, row: dict[str, Any]) -> None:
        """Add one telemetry row (``body``, ``requests``, ``errors``, ``psi_max``); a malformed body
        is skipped. Raises nothing."""
        try:
            summary = json.loads(row["body"])["summary"]
            lat = TelemetrySummary.from_dict({"latency": summary["latency"]}).latency
            feats = [Histogram.from_dict({"edges": e, "counts": c})
                     for e, c in zip(summary.get("feature_edges") or [], summary.get("features") or [])]
        except (SchemaError, KeyError, TypeError, ValueError):
            return
        self.lat = lat if self.lat is None else self.lat + lat
        self.n += row["requests"] or 0
        self.e += row["errors"] or 0
        if feats:
            try:
                self.feats = feats if self.feats is None else [a + b for a, b in zip(self.feats, feats)]
            except SchemaError:
                self.feats = feats
        if row["psi_max"] is not None:
            self.reported = max(self.reported or 0.0, row["psi_max"])

    def drift(self, ref: Optional[list[list[float]]]) -> Optional[float]:
        """Largest feature PSI of the merged histograms against ``ref``, judged only with
        ``SAMPLES_PER_BIN`` samples per bin (None before). Without a reference: the largest PSI the
        devices reported for their own windows."""
        if ref is None or self.feats is None or len(ref) != len(self.feats):
            return self.reported
        values = [psi(rf, h.counts) for rf, h in zip(ref, self.feats) if h.count >= SAMPLES_PER_BIN * len(h.counts)]
        finite = [v for v in values if v is not None]
        return max(finite) if finite else None

    def point(self, t: float, ref: Optional[list[list[float]]]) -> dict[str, Any]:
        return {
            "t": round(t, 3),
            "p95_ms": _finite(interpolated_quantile(self.lat, 0.95)) if self.lat is not None else None,
            "psi_max": _finite(self.drift(ref)),
            "requests": self.n,
            "error_rate": _finite(self.e / self.n) if self.n else None,
        }


_SERIES_COLUMNS = ("id", "model", "version", "window_end", "requests", "errors", "psi_max", "body")


def series(
    store: Store,
    since_s: float = 600.0,
    now: Optional[float] = None,
    points: int = 60,
    reference: Optional[ReferenceLookup] = None,
) -> list[dict[str, Any]]:
    """Per (model, version): time buckets of merged telemetry {t, p95_ms, psi_max, requests,
    error_rate}; ``psi_max`` is the drift of the bucket's merged inputs against ``reference``."""
    now = time.time() if now is None else now
    start = now - since_s
    step = max(1.0, since_s / points)
    buckets: dict[tuple[str, str], dict[int, _Bucket]] = {}
    for r in store.telemetry_rows(since=start, columns=_SERIES_COLUMNS, limit=200_000):
        if r["model"] and r["version"]:
            b = int((r["window_end"] - start) // step)
            buckets.setdefault((r["model"], r["version"]), {}).setdefault(b, _Bucket()).add(r)
    out = []
    for (model, version), by_bucket in sorted(buckets.items()):
        ref = reference(model, version) if reference else None
        pts = [s.point(start + (b + 1) * step, ref) for b, s in sorted(by_bucket.items())]
        out.append({"model": model, "version": version, "points": pts})
    return out


class SeriesCache:
    """:func:`series` for the dashboard's frequent polls: buckets of ``step`` seconds on absolute
    time, filled incrementally (each telemetry row is read once), kept for ``keep_s``."""

    def __init__(self, store: Store, step: float = 10.0, keep_s: float = 3600.0,
                 reference: Optional[ReferenceLookup] = None) -> None:
        self.store = store
        self.step = step
        self.keep_s = keep_s
        self.reference = reference
        self.after_id = 0
        self.buckets: dict[tuple[str, str], dict[int, _Bucket]] = {}
        self.lock = threading.Lock()

    def update(self, now: float) -> None:
        start = now - self.keep_s
        for r in self.store.telemetry_rows(since=start, after_id=self.after_id, limit=200_000,
                                           columns=_SERIES_COLUMNS):
            self.after_id = max(self.after_id, r["id"])
            if r["model"] and r["version"]:
                by_bucket = self.buckets.setdefault((r["model"], r["version"]), {})
                by_bucket.setdefault(int(r["window_end"] // self.step), _Bucket()).add(r)
        oldest = int(start // self.step)
        for by_bucket in self.buckets.values():
            for b in [b for b in by_bucket if b < oldest]:
                del by_bucket[b]

    def series(self, since_s: float, now: Optional[float] = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        if since_s > self.keep_s:
            return series(self.store, since_s, now, reference=self.reference)
        with self.lock:
            self.update(now)
            first = int((now - since_s) // self.step)
            out = []
            for (model, version), by_bucket in sorted(self.buckets.items()):
                ref = self.reference(model, version) if self.reference else None
                pts = [s.point((b + 1) * self.step, ref) for b, s in sorted(by_bucket.items()) if b >= first]
                if pts:
                    out.append({"model": model, "version": version, "points": pts})
            return out


def events(store: Store, limit: int = 100, device_id: Optional[str] = None) -> list[dict[str, Any]]:
    """Recent events, newest first (§4 ``/api/events``)."""
    return [
        {
            "ts": e["ts"],
            "device_id": e["device_id"],
            "event": e["event"],
            "version": e["version"],
            "reason": e["reason"],
            "from_state": e["from_state"],
            "to_state": e["to_state"],
            "model": e["model"],
        }
        for e in store.events(limit=limit, device_id=device_id)
    ]


def telemetry_summary(
    store: Store, model: str, version: Optional[str] = None, since_s: float = 3600.0, now: Optional[float] = None,
    reference_freqs: Optional[list[list[float]]] = None,
) -> list[dict[str, Any]]:
    """Merged windows per version of ``model``: p50/p95/p99, error rate, PSI per feature, class distribution."""
    now = time.time() if now is None else now
    merged: dict[str, TelemetrySummary] = {}
    devices: dict[str, set[str]] = {}
    psi_rep: dict[str, list[float]] = {}
    for r in store.telemetry_rows(model=model, version=version, since=now - since_s,
                                  columns=("device_id", "version", "body")):
        try:
            msg = json.loads(r["body"])
            s = TelemetrySummary.from_dict(msg.get("summary") or {})
        except (SchemaError, ValueError):
            continue
        v = r["version"] or "-"
        try:
            merged[v] = s if v not in merged else merged[v] + s
        except SchemaError:
            continue
        devices.setdefault(v, set()).add(r["device_id"])
        psis = [p for p in msg.get("psi") or [] if p is not None]
        if psis:
            psi_rep.setdefault(v, []).append(max(psis))
    out = []
    for v, s in sorted(merged.items()):
        if reference_freqs and len(reference_freqs) == len(s.features):
            feature_psi = [_finite(p) for p in s.feature_psi(reference_freqs)]
        else:
            feature_psi = []
        total = sum(s.classes.values())
        out.append(
            {
                "model": model,
                "version": v,
                "devices": len(devices[v]),
                "windows": s.windows,
                "requests": s.requests,
                "errors": s.errors,
                "nonfinite": s.nonfinite,
                "error_rate": _finite((s.errors + s.nonfinite) / s.requests) if s.requests else None,
                "p50_ms": _finite(interpolated_quantile(s.latency, 0.50)),
                "p95_ms": _finite(interpolated_quantile(s.latency, 0.95)),
                "p99_ms": _finite(interpolated_quantile(s.latency, 0.99)),
                "psi_per_feature": feature_psi,
                "psi_reported_max": _finite(max(psi_rep[v])) if psi_rep.get(v) else None,
                "classes": {k: round(c / total, 4) for k, c in sorted(s.classes.items())} if total else {},
                "shadow_agreement": _finite(s.shadow.agreement) if s.shadow and s.shadow.agreement is not None
                else None,
            }
        )
    return out


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def prometheus(
    devices: list[dict[str, Any]], rollouts: list[dict[str, Any]], collector: dict[str, Any], extra: dict[str, float]
) -> str:
    """The Prometheus text exposition of the fleet."""
    lines = [
        "# HELP edgeml_fleet_devices Devices known to the controller.",
        "# TYPE edgeml_fleet_devices gauge",
        f"edgeml_fleet_devices {len(devices)}",
        "# HELP edgeml_fleet_devices_online Devices whose retained state says online.",
        "# TYPE edgeml_fleet_devices_online gauge",
        f"edgeml_fleet_devices_online {sum(1 for d in devices if d['online'])}",
        "# HELP edgeml_fleet_devices_by_version Devices per running model version.",
        "# TYPE edgeml_fleet_devices_by_version gauge",
    ]
    counts: dict[tuple[str, str], int] = {}
    for d in devices:
        key = (d["model"] or "", d["version"] or "")
        counts[key] = counts.get(key, 0) + 1
    for (m, v), n in sorted(counts.items()):
        lines.append(f'edgeml_fleet_devices_by_version{{model="{_label(m)}",version="{_label(v)}"}} {n}')
    lines += ["# HELP edgeml_device_p95_ms Latest window p95 latency per device.", "# TYPE edgeml_device_p95_ms gauge"]
    for d in devices:
        if d["p95_ms"] is not None:
            lines.append(f'edgeml_device_p95_ms{{device="{_label(d["device_id"])}"}} {d["p95_ms"]}')
    lines += ["# HELP edgeml_device_psi_max Latest window largest feature PSI per device.",
              "# TYPE edgeml_device_psi_max gauge"]
    for d in devices:
        if d["psi_max"] is not None:
            lines.append(f'edgeml_device_psi_max{{device="{_label(d["device_id"])}"}} {d["psi_max"]}')
    lines += ["# HELP edgeml_rollout_stage Current stage index per rollout (state in a label).",
              "# TYPE edgeml_rollout_stage gauge"]
    for r in rollouts:
        lines.append(
            f'edgeml_rollout_stage{{rollout="{_label(r["id"])}",model="{_label(r["model"])}",'
            f'version="{_label(r["version"])}",state="{r["state"]}"}} {r["stage_index"]}'
        )
    lines += ["# HELP edgeml_rollout_devices_at_version Targeted devices running the rollout's version.",
              "# TYPE edgeml_rollout_devices_at_version gauge"]
    for r in rollouts:
        lines.append(f'edgeml_rollout_devices_at_version{{rollout="{_label(r["id"])}"}} {r["devices_at_version"]}')
    lines += ["# HELP edgeml_collector_messages_total Messages received by kind.",
              "# TYPE edgeml_collector_messages_total counter"]
    for kind, n in sorted(collector.get("received", {}).items()):
        lines.append(f'edgeml_collector_messages_total{{kind="{kind}"}} {n}')
    for name in ("inserted_telemetry", "inserted_events", "duplicates", "rejected", "dropped", "store_errors"):
        lines += [f"# TYPE edgeml_collector_{name}_total counter",
                  f"edgeml_collector_{name}_total {collector.get(name, 0)}"]
    for name, value in sorted(extra.items()):
        lines += [f"# TYPE edgeml_{name} gauge", f"edgeml_{name} {value}"]
    return "\n".join(lines) + "\n"
