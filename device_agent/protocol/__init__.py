"""The host/device contract, pure and free of I/O.

Topic names (:mod:`.topics`), message schemas (:mod:`.messages`), the model manifest
(:mod:`.manifest`), mergeable histograms and drift statistics (:mod:`.sketch`). The host imports
it from here, so there is exactly one definition of every message.
"""

from device_agent.protocol.broker import BrokerURL
from device_agent.protocol.manifest import (
    FeatureProfile,
    GoldenVector,
    ModelManifest,
    ReferenceProfile,
    TensorSpec,
)
from device_agent.protocol.messages import (
    DesiredState,
    Event,
    ReportedState,
    ShadowSummary,
    Telemetry,
    TelemetrySummary,
)
from device_agent.protocol.schema import Record, parse_json
from device_agent.protocol.sketch import (
    CONFIDENCE_EDGES,
    LATENCY_BOUNDS_MS,
    Histogram,
    LatencyHistogram,
    distribution_shift,
    psi,
)
from device_agent.protocol.topics import Topics, topic_matches

__all__ = [
    "CONFIDENCE_EDGES",
    "LATENCY_BOUNDS_MS",
    "BrokerURL",
    "DesiredState",
    "Event",
    "FeatureProfile",
    "GoldenVector",
    "Histogram",
    "LatencyHistogram",
    "ModelManifest",
    "Record",
    "ReferenceProfile",
    "ReportedState",
    "ShadowSummary",
    "Telemetry",
    "TelemetrySummary",
    "TensorSpec",
    "Topics",
    "distribution_shift",
    "parse_json",
    "psi",
    "topic_matches",
]
