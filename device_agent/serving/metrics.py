"""Prometheus text exposition of one agent's metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from device_agent.agent.telemetry import process_rss_bytes
from device_agent.protocol.sketch import LATENCY_BOUNDS_MS

if TYPE_CHECKING:
    from device_agent.agent.core import Agent

_LE_STEP = 5  # every 5th fixed latency bound (two per decade) as a Prometheus bucket


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(agent: Agent) -> str:
    """Counters are lifetime (closed windows plus the open one); the latency histogram covers
    closed windows."""
    life = agent.lifetime
    win = agent.window
    dev = f'device="{_esc(agent.cfg.device_id)}"'
    lines = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{{{labels}}} {value}")

    metric("edgeml_agent_requests_total", "counter", "Predict calls served or failed.",
           [(dev, life.requests + win.requests)])
    metric("edgeml_agent_errors_total", "counter", "Predict calls that failed (runtime error or NaN/inf output).",
           [(dev, life.errors + win.errors)])
    metric("edgeml_agent_rejected_total", "counter", "Requests refused for bad input.",
           [(dev, life.rejected + win.rejected)])
    cum = 0
    buckets = []
    counts = life.latency.counts
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        cum += counts[i]
        if i % _LE_STEP == 0:
            buckets.append((f'{dev},le="{bound:.6g}"', float(cum)))
    buckets.append((f'{dev},le="+Inf"', float(life.latency.count)))
    lines.append("# HELP edgeml_agent_latency_ms Predict latency in milliseconds (closed telemetry windows).")
    lines.append("# TYPE edgeml_agent_latency_ms histogram")
    for labels, value in buckets:
        lines.append(f"edgeml_agent_latency_ms_bucket{{{labels}}} {value:.0f}")
    lines.append(f"edgeml_agent_latency_ms_sum{{{dev}}} {life.latency.total_ms}")
    lines.append(f"edgeml_agent_latency_ms_count{{{dev}}} {life.latency.count}")
    m = agent.active
    if m is not None:
        metric("edgeml_agent_model_info", "gauge", "The active model.",
               [(f'{dev},model="{_esc(m.name)}",version="{_esc(m.version)}",runtime="{_esc(m.runtime.name)}"', 1)])
    metric("edgeml_agent_update_state", "gauge", "Current update state (1 for the current one).",
           [(f'{dev},state="{_esc(agent.record.state)}"', 1)])
    metric("edgeml_agent_spooled_windows", "gauge", "Telemetry windows waiting for the broker.",
           [(dev, len(agent.spool))])
    metric("edgeml_agent_telemetry_dropped_total", "counter", "Telemetry windows dropped because the spool was full.",
           [(dev, agent.spool.dropped)])
    connected = 1 if agent.transport is not None and agent.transport.connected.is_set() else 0
    metric("edgeml_agent_connected", "gauge", "1 when connected to the broker.", [(dev, connected)])
    metric("edgeml_agent_rss_bytes", "gauge", "Resident memory of the agent process.", [(dev, process_rss_bytes())])
    return "\n".join(lines) + "\n"
