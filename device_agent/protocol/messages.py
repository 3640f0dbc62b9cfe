"""Messages between the workstation, the controller and devices (one definition, both sides).

Every message is a versioned :class:`~device_agent.protocol.schema.Record`; unknown fields
survive a round trip; a reader rejects another major version with a clear SchemaError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from device_agent.errors import SchemaError
from device_agent.protocol.schema import Record, require
from device_agent.protocol.sketch import CONFIDENCE_EDGES, Histogram, LatencyHistogram, psi


def _opt_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


@dataclass
class DesiredState(Record):
    """What the controller wants a device to run (retained on ``devices/<id>/desired``).

    ``shadow`` optionally names a candidate version to run beside the active one on a sampled
    ``shadow_fraction`` of requests (answers still come from ``version``).
    """

    KIND = "desired"

    model: str = ""
    version: str = ""
    shadow_version: Optional[str] = None
    shadow_fraction: float = 0.0
    rollout: Optional[str] = None
    issued_at: float = 0.0

    def validate(self) -> None:
        require(isinstance(self.model, str) and bool(self.model), self.KIND, "model must be a non-empty string")
        require(isinstance(self.version, str) and bool(self.version), self.KIND, "version must be a non-empty string")
        require(_opt_str(self.shadow_version), self.KIND, "shadow_version must be a string or null")
        require(
            isinstance(self.shadow_fraction, (int, float)) and 0.0 <= self.shadow_fraction <= 1.0,
            self.KIND,
            "shadow_fraction must be between 0 and 1",
        )
        require(_opt_str(self.rollout), self.KIND, "rollout must be a string or null")


@dataclass
class ReportedState(Record):
    """What a device runs now (retained on ``devices/<id>/state``; the last will sets online=False)."""

    KIND = "state"

    device_id: str = ""
    online: bool = True
    model: Optional[str] = None
    version: Optional[str] = None
    previous_version: Optional[str] = None
    update_state: str = "idle"
    update_target: Optional[str] = None
    last_error: Optional[str] = None
    group: Optional[str] = None
    runtime: Optional[str] = None
    agent_version: Optional[str] = None
    ts: float = 0.0

    def validate(self) -> None:
        require(isinstance(self.device_id, str) and bool(self.device_id), self.KIND, "device_id is required")
        require(isinstance(self.online, bool), self.KIND, "online must be true or false")
        for name in ("model", "version", "previous_version", "update_target", "last_error", "group", "runtime"):
            require(_opt_str(getattr(self, name)), self.KIND, f"{name} must be a string or null")


@dataclass
class Event(Record):
    """One update-lifecycle transition (``devices/<id>/events``, not retained)."""

    KIND = "event"

    device_id: str = ""
    seq: int = 0
    ts: float = 0.0
    event: str = ""
    from_state: Optional[str] = None
    to_state: Optional[str] = None
    model: Optional[str] = None
    version: Optional[str] = None
    reason: str = ""

    def validate(self) -> None:
        require(isinstance(self.device_id, str) and bool(self.device_id), self.KIND, "device_id is required")
        require(isinstance(self.seq, int) and self.seq >= 0, self.KIND, "seq must be a non-negative integer")
        require(isinstance(self.event, str) and bool(self.event), self.KIND, "event is required")


@dataclass
class ShadowSummary:
    """Candidate-beside-active comparison over a window."""

    version: Optional[str] = None
    requests: int = 0
    agreements: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def __add__(self, other: ShadowSummary) -> ShadowSummary:
        return ShadowSummary(
            self.version or other.version,
            self.requests + other.requests,
            self.agreements + other.agreements,
            self.latency + other.latency,
        )

    @property
    def agreement(self) -> float | None:
        return self.agreements / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "agreements": self.agreements,
            "latency": self.latency.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ShadowSummary:
        if not isinstance(data, dict):
            raise SchemaError("shadow summary: expected an object")
        return cls(
            data.get("version"),
            int(data.get("requests", 0)),
            int(data.get("agreements", 0)),
            LatencyHistogram.from_dict(data.get("latency", {})),
        )


@dataclass
class TelemetrySummary:
    """A mergeable window summary. ``TelemetrySummary.zero(edges) + w`` == ``w``; ``a + b`` is the
    window covering both. Feature histograms use the reference profile's bin edges."""

    requests: int = 0
    errors: int = 0
    rejected: int = 0
    nonfinite: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    classes: dict[str, int] = field(default_factory=dict)
    confidence: Histogram = field(default_factory=lambda: Histogram.zero(CONFIDENCE_EDGES))
    features: list[Histogram] = field(default_factory=list)
    shadow: Optional[ShadowSummary] = None
    rss_bytes_max: int = 0
    cpu_seconds: float = 0.0
    duration_s: float = 0.0
    windows: int = 0

    @classmethod
    def zero(cls, feature_edges: list[list[float]] | None = None) -> TelemetrySummary:
        return cls(features=[Histogram.zero(e) for e in (feature_edges or [])])

    def __add__(self, other: TelemetrySummary) -> TelemetrySummary:
        if self.features and other.features and len(self.features) != len(other.features):
            raise SchemaError("telemetry: cannot merge summaries with different feature counts")
        if not self.features:
            features = list(other.features)
        elif not other.features:
            features = list(self.features)
        else:
            features = [a + b for a, b in zip(self.features, other.features)]
        classes = dict(self.classes)
        for k, v in other.classes.items():
            classes[k] = classes.get(k, 0) + v
        if self.shadow and other.shadow:
            shadow: Optional[ShadowSummary] = self.shadow + other.shadow
        else:
            shadow = self.shadow or other.shadow
        return TelemetrySummary(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            rejected=self.rejected + other.rejected,
            nonfinite=self.nonfinite + other.nonfinite,
            latency=self.latency + other.latency,
            classes=classes,
            confidence=self.confidence + other.confidence,
            features=features,
            shadow=shadow,
            rss_bytes_max=max(self.rss_bytes_max, other.rss_bytes_max),
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            duration_s=self.duration_s + other.duration_s,
            windows=self.windows + other.windows,
        )

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def feature_psi(self, reference_freqs: list[list[float]]) -> list[float | None]:
        """PSI per feature against the reference profile's per-bin frequencies."""
        if len(reference_freqs) != len(self.features):
            raise SchemaError(
                f"telemetry: {len(self.features)} feature histograms but the reference has {len(reference_freqs)}"
            )
        return [psi(ref, h.counts) for ref, h in zip(reference_freqs, self.features)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rejected": self.rejected,
            "nonfinite": self.nonfinite,
            "latency": self.latency.to_dict(),
            "classes": dict(self.classes),
            "confidence": self.confidence.to_dict(),
            "features": [h.counts for h in self.features],
            "feature_edges": [h.edges for h in self.features],
            "shadow": self.shadow.to_dict() if self.shadow else None,
            "rss_bytes_max": self.rss_bytes_max,
            "cpu_seconds": self.cpu_seconds,
            "duration_s": self.duration_s,
            "windows": self.windows,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TelemetrySummary:
        if not isinstance(data, dict):
            raise SchemaError("telemetry summary: expected an object")
        try:
            counts = data.get("features", [])
            edges = data.get("feature_edges", [])
            if len(counts) != len(edges):
                raise SchemaError("telemetry summary: features and feature_edges differ in length")
            classes = data.get("classes", {})
            if not isinstance(classes, dict) or not all(isinstance(v, int) for v in classes.values()):
                raise SchemaError("telemetry summary: classes must map labels to integer counts")
            shadow = data.get("shadow")
            return cls(
                requests=int(data.get("requests", 0)),
                errors=int(data.get("errors", 0)),
                rejected=int(data.get("rejected", 0)),
                nonfinite=int(data.get("nonfinite", 0)),
                latency=LatencyHistogram.from_dict(data.get("latency", {})),
                classes={str(k): v for k, v in classes.items()},
                confidence=Histogram.from_dict(data.get("confidence", Histogram.zero(CONFIDENCE_EDGES).to_dict())),
                features=[Histogram.from_dict({"edges": e, "counts": c}) for e, c in zip(edges, counts)],
                shadow=ShadowSummary.from_dict(shadow) if shadow is not None else None,
                rss_bytes_max=int(data.get("rss_bytes_max", 0)),
                cpu_seconds=float(data.get("cpu_seconds", 0.0)),
                duration_s=float(data.get("duration_s", 0.0)),
                windows=int(data.get("windows", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"telemetry summary: {exc}") from exc


@dataclass
class Telemetry(Record):
    """One window of telemetry (``devices/<id>/telemetry``, QoS 1, not retained).

    ``seq`` increases by one per window per device; readers drop duplicates by it. ``dropped``
    counts windows the device's spool had to discard while offline.
    """

    KIND = "telemetry"

    device_id: str = ""
    seq: int = 0
    window_start: float = 0.0
    window_end: float = 0.0
    model: Optional[str] = None
    version: Optional[str] = None
    summary: TelemetrySummary = field(default_factory=TelemetrySummary)
    psi: list[Optional[float]] = field(default_factory=list)
    drift: bool = False
    dropped: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Telemetry:
        data = dict(data)
        if "summary" in data:
            data["summary"] = TelemetrySummary.from_dict(data["summary"])
        return super().from_dict(data)

    def validate(self) -> None:
        require(isinstance(self.device_id, str) and bool(self.device_id), self.KIND, "device_id is required")
        require(isinstance(self.seq, int) and self.seq >= 0, self.KIND, "seq must be a non-negative integer")
        require(isinstance(self.summary, TelemetrySummary), self.KIND, "summary must be an object")
