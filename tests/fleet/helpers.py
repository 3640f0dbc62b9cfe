"""Builders of real protocol messages for fleet tests."""

from __future__ import annotations

import time

from device_agent.protocol import Event, LatencyHistogram, ReportedState, Telemetry, TelemetrySummary


def telemetry(
    device_id: str, seq: int, version: str = "1.0.0", requests: int = 100, ms: float = 2.0, errors: int = 0,
    model: str = "digits", classes: dict[str, int] | None = None, end: float | None = None,
) -> Telemetry:
    lat = LatencyHistogram()
    lat.add(ms, requests)
    end = time.time() if end is None else end
    s = TelemetrySummary(
        requests=requests, errors=errors, latency=lat,
        classes=classes if classes is not None else {"0": requests // 2, "1": requests - requests // 2}, windows=1,
        duration_s=1.0,
    )
    return Telemetry(device_id=device_id, seq=seq, window_start=end - 1, window_end=end, model=model,
                     version=version, summary=s, psi=[0.01, 0.02])


def state(device_id: str, version: str | None = "1.0.0", online: bool = True, model: str = "digits",
          update_state: str = "committed", group: str | None = None) -> ReportedState:
    return ReportedState(device_id=device_id, online=online, model=model, version=version,
                         update_state=update_state, group=group, ts=time.time())


def event(device_id: str, seq: int, name: str, version: str = "2.0.0", to_state: str | None = None) -> Event:
    return Event(device_id=device_id, seq=seq, ts=time.time(), event=name, to_state=to_state, model="digits",
                 version=version, reason="test")
