"""Alert rules evaluated on merged telemetry per model version, with actions: log, webhook, auto_rollback.

Rules come from ``edgeml.toml``::

    [[fleet.alerts]]
    name = "latency_spike"        # free text, shown in the alert
    metric = "p95_ms"             # error_rate | p95_ms | psi | confidence_drop
    op = ">"
    threshold = 250
    window = "2m"                 # telemetry windows that ended within this time
    min_requests = 50
    actions = ["log", "webhook", "auto_rollback"]
    webhook = "http://127.0.0.1:9000/hook"

Without rules the defaults below apply (the seed's three: accuracy_drop, latency_spike,
error_rate). ``accuracy_drop`` needs labels the fleet does not have, so it is measured by its
proxy, the fall of the mean top-class confidence against the release's reference profile.

A rule fires once when it starts to hold for a (model, version) and again only after it cleared.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from device_agent.protocol import ModelManifest, TelemetrySummary
from edgeml.errors import UsageError
from edgeml.fleet.gates import OPS
from edgeml.fleet.rollout import parse_duration
from edgeml.fleet.store import Store

log = logging.getLogger("edgeml.fleet.alerts")

ALERT_METRICS = ("error_rate", "p95_ms", "psi", "confidence_drop")
ACTIONS = ("log", "webhook", "auto_rollback")


@dataclass(frozen=True)
class AlertRule:
    """One rule. Build from config with :meth:`from_config` (raises UsageError)."""

    name: str
    metric: str
    op: str
    threshold: float
    window_s: float = 120.0
    min_requests: int = 50
    actions: tuple[str, ...] = ("log",)
    webhook: Optional[str] = None

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> AlertRule:
        where = f"alert rule {data.get('name', '?')!r}"
        try:
            rule = cls(
                name=str(data["name"]),
                metric=str(data["metric"]),
                op=str(data.get("op", ">")),
                threshold=float(data["threshold"]),
                window_s=parse_duration(data.get("window", "2m")),
                min_requests=int(data.get("min_requests", 50)),
                actions=tuple(data.get("actions", ["log"])),
                webhook=data.get("webhook"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {exc}", hint="each [[fleet.alerts]] needs name, metric and threshold") from exc
        if rule.metric not in ALERT_METRICS:
            raise UsageError(f"{where}: unknown metric {rule.metric!r}", hint=f"use one of {', '.join(ALERT_METRICS)}")
        if rule.op not in OPS:
            raise UsageError(f"{where}: unknown op {rule.op!r}", hint="use one of < <= > >= ==")
        bad = [a for a in rule.actions if a not in ACTIONS]
        if bad:
            raise UsageError(f"{where}: unknown actions {bad}", hint=f"use {', '.join(ACTIONS)}")
        if "webhook" in rule.actions and not rule.webhook:
            raise UsageError(f"{where}: the webhook action needs webhook = \"http://...\"")
        return rule

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)


DEFAULT_RULES = (
    AlertRule("error_rate", "error_rate", ">", 0.05),
    AlertRule("latency_spike", "p95_ms", ">", 250.0),
    AlertRule("accuracy_drop", "confidence_drop", ">", 0.15),
)


def load_rules(section: Mapping[str, Any]) -> list[AlertRule]:
    """Rules from the ``[fleet]`` section's ``alerts`` list (defaults when absent). Raises UsageError."""
    raw = section.get("alerts")
    if raw is None:
        return list(DEFAULT_RULES)
    if not isinstance(raw, list):
        raise UsageError("[fleet] alerts must be a list of tables", hint="write [[fleet.alerts]] blocks")
    return [AlertRule.from_config(r) for r in raw]


def mean_confidence(hist_counts: Sequence[float], edges: Sequence[float]) -> Optional[float]:
    """Mean of a confidence histogram on ``edges`` (bin midpoints; the outer bins are closed at 0 and 1)."""
    total = sum(hist_counts)
    if not total:
        return None
    bounds = [0.0, *edges, 1.0]
    mids = [(a + b) / 2 for a, b in zip(bounds, bounds[1:])]
    return sum(m * c for m, c in zip(mids, hist_counts)) / total


@dataclass
class AlertEvaluator:
    """Evaluate rules on the store's telemetry; run actions on the rising edge."""

    store: Store
    rules: Sequence[AlertRule]
    halt: Optional[Callable[[str, str, str], Any]] = None  # (model, version, reason) -> halt its rollout
    manifest_lookup: Optional[Callable[[str, str], Optional[ModelManifest]]] = None
    firing: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def values(self, rule: AlertRule, now: float) -> dict[tuple[str, str], tuple[Optional[float], int]]:
        """Per (model, version): the rule's metric over its window and the requests behind it."""
        rows = self.store.telemetry_rows(
            since=now - rule.window_s, columns=("model", "version", "requests", "errors", "p95_ms", "psi_max", "body")
            if rule.metric == "confidence_drop" else ("model", "version", "requests", "errors", "p95_ms", "psi_max"),
            limit=None,
        )
        acc: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            if not r["model"] or not r["version"]:
                continue
            a = acc.setdefault((r["model"], r["version"]), {"n": 0, "e": 0, "p95": 0.0, "psi": 0.0, "psi_n": 0,
                                                            "conf": None})
            n = int(r["requests"] or 0)
            a["n"] += n
            a["e"] += int(r["errors"] or 0)
            if r["p95_ms"] is not None:
                a["p95"] += r["p95_ms"] * n
            if r["psi_max"] is not None:
                a["psi"] += r["psi_max"] * n
                a["psi_n"] += n
            if rule.metric == "confidence_drop":
                s = TelemetrySummary.from_dict(json.loads(r["body"]).get("summary") or {})
                a["conf"] = s.confidence if a["conf"] is None else a["conf"] + s.confidence
        out: dict[tuple[str, str], tuple[Optional[float], int]] = {}
        for key, a in acc.items():
            n = a["n"]
            value: Optional[float] = None
            if n:
                if rule.metric == "error_rate":
                    value = a["e"] / n
                elif rule.metric == "p95_ms":
                    value = a["p95"] / n  # requests-weighted mean of the windows' p95
                elif rule.metric == "psi":
                    value = a["psi"] / a["psi_n"] if a["psi_n"] else None
                elif rule.metric == "confidence_drop" and a["conf"] is not None:
                    value = self._confidence_drop(key, a["conf"].counts, a["conf"].edges)
            out[key] = (value, n)
        return out

    def _confidence_drop(self, key: tuple[str, str], counts: list[int], edges: list[float]) -> Optional[float]:
        manifest = self.manifest_lookup(*key) if self.manifest_lookup else None
        if manifest is None or not manifest.reference.confidence_freqs:
            return None
        ref = mean_confidence(manifest.reference.confidence_freqs, manifest.reference.confidence_edges or edges)
        now = mean_confidence(counts, edges)
        return None if ref is None or now is None else ref - now

    def evaluate(self, now: Optional[float] = None) -> list[dict[str, Any]]:
        """Evaluate every rule; returns the alerts that fired now."""
        now = time.time() if now is None else now
        fired = []
        for rule in self.rules:
            try:
                values = self.values(rule, now)
            except Exception as exc:  # noqa: BLE001 - a broken rule must not stop the controller
                log.warning("alert rule %s could not be evaluated: %s", rule.name, exc)
                continue
            for (model, version), (value, n) in values.items():
                key = (rule.name, model, version)
                active = value is not None and n >= rule.min_requests and rule.holds(value)
                if active and key not in self.firing:
                    self.firing[key] = now
                    fired.append(self._fire(rule, model, version, value, now))  # type: ignore[arg-type]
                elif not active and key in self.firing and value is not None:
                    del self.firing[key]
            for key in [k for k in self.firing if k[0] == rule.name and (k[1], k[2]) not in values]:
                del self.firing[key]  # no telemetry left in the window: nothing holds any more
        return fired

    def _fire(self, rule: AlertRule, model: str, version: str, value: float, now: float) -> dict[str, Any]:
        msg = f"{rule.name}: {model} {version} {rule.metric}={value:.4g} ({rule.op}{rule.threshold:g})"
        alert = {"ts": now, "rule": rule.name, "model": model, "version": version, "value": value, "message": msg}
        self.store.add_alert(rule.name, msg, model, version, value, rule.actions, now)
        if "log" in rule.actions:
            log.warning("ALERT %s", msg)
        if "webhook" in rule.actions and rule.webhook:
            threading.Thread(target=post_webhook, args=(rule.webhook, alert), daemon=True).start()
        if "auto_rollback" in rule.actions and self.halt is not None:
            self.halt(model, version, f"alert {msg}")
        return alert


def post_webhook(url: str, alert: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST the alert as JSON; failures are logged, never raised."""
    req = urllib.request.Request(
        url, data=json.dumps(alert).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the operator's own URL
            return bool(200 <= resp.status < 300)
    except Exception as exc:  # noqa: BLE001
        log.warning("alert webhook %s failed: %s", url, exc)
        return False
