"""The collector: device state, events and telemetry from the broker into the store.

The MQTT thread only queues ``(kind, device, payload, time)``; a writer thread parses and writes
them in batches (one transaction per batch, every ``flush_interval`` or ``batch_size`` messages).
Duplicates (same device and sequence number) are dropped by the store's unique keys. A message
this reader cannot understand is counted and logged, never fatal. When the store is unreachable
the batch is kept and retried with a capped backoff, so nothing received is lost while the
process lives (``max_pending`` bounds the memory; beyond it the oldest telemetry is dropped and
counted).

Several collectors can share the load with an MQTT shared subscription (``share_group``): the
broker hands each message to one of them; the store's unique keys keep the result exact.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from device_agent.errors import SchemaError
from device_agent.protocol import LATENCY_BOUNDS_MS, Event, ReportedState, Telemetry, Topics, parse_json
from edgeml.errors import FleetError
from edgeml.fleet.mqtt import MqttLink
from edgeml.fleet.store import Store

log = logging.getLogger("edgeml.fleet.collector")

_Batch = tuple[list[Any], list[Any], list[Any], dict[str, float]]


@dataclass
class CollectorStats:
    received: dict[str, int] = field(default_factory=lambda: {"state": 0, "events": 0, "telemetry": 0})
    inserted_telemetry: int = 0
    inserted_events: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    batches: int = 0
    store_errors: int = 0
    last_batch_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": dict(self.received),
            "inserted_telemetry": self.inserted_telemetry,
            "inserted_events": self.inserted_events,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "batches": self.batches,
            "store_errors": self.store_errors,
        }


def _p95_from_sparse(buckets: dict[str, int]) -> Optional[float]:
    """p95 (bucket upper bound, ms) from a sparse latency histogram dict."""
    items = sorted((int(k), int(v)) for k, v in buckets.items())
    total = sum(v for _, v in items)
    if not total:
        return None
    rank, seen = 0.95 * total, 0
    for i, v in items:
        seen += v
        if seen >= rank:
            return LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)]
    return LATENCY_BOUNDS_MS[-1]


def telemetry_row(device_id: str, payload: bytes, received_at: float) -> dict[str, Any]:
    """Check a telemetry message and extract the columns the store indexes. Raises SchemaError."""
    data = parse_json(payload, "telemetry")
    Telemetry.check_schema(data)
    if data.get("device_id") != device_id:
        raise SchemaError(f"telemetry: device_id {data.get('device_id')!r} does not match the topic's {device_id!r}")
    seq = data.get("seq")
    summary = data.get("summary")
    if not isinstance(seq, int) or seq < 0 or not isinstance(summary, dict):
        raise SchemaError("telemetry: seq must be a non-negative integer and summary an object")
    try:
        requests = int(summary.get("requests", 0))
        errors = int(summary.get("errors", 0)) + int(summary.get("nonfinite", 0))
        latency = summary.get("latency") or {}
        p95 = _p95_from_sparse(latency.get("buckets") or {})
        psis = [float(v) for v in data.get("psi") or [] if v is not None]
        window_end = float(data.get("window_end") or received_at)
        window_start = float(data.get("window_start") or window_end)
    except (TypeError, ValueError, AttributeError) as exc:
        raise SchemaError(f"telemetry: {exc}") from exc
    return {
        "device_id": device_id,
        "seq": seq,
        "model": data.get("model"),
        "version": data.get("version"),
        "window_start": window_start,
        "window_end": window_end,
        "received_at": received_at,
        "requests": requests,
        "errors": errors,
        "p95_ms": p95,
        "psi_max": max(psis) if psis else None,
        "drift": bool(data.get("drift", False)),
        "dropped": int(data.get("dropped", 0) or 0),
        "body": payload.decode() if isinstance(payload, bytes) else payload,
    }


def event_row(device_id: str, payload: bytes, received_at: float) -> dict[str, Any]:
    """Parse an event message into a store row. Raises SchemaError."""
    ev = Event.from_json(payload)
    if ev.device_id != device_id:
        raise SchemaError(f"event: device_id {ev.device_id!r} does not match the topic's {device_id!r}")
    return {
        "device_id": device_id,
        "seq": ev.seq,
        "ts": ev.ts or received_at,
        "received_at": received_at,
        "event": ev.event[:64],
        "from_state": ev.from_state,
        "to_state": ev.to_state,
        "model": ev.model,
        "version": ev.version,
        "reason": ev.reason,
    }


def state_row(device_id: str, payload: bytes, received_at: float) -> dict[str, Any]:
    """Parse a reported state into the dict the store applies. Raises SchemaError."""
    data = parse_json(payload, "state")
    if data.get("online") is False and "device_id" not in data:
        data["device_id"] = device_id  # a minimal last will
    st = ReportedState.from_dict(data)
    if st.device_id != device_id:
        raise SchemaError(f"state: device_id {st.device_id!r} does not match the topic's {device_id!r}")
    out = st.to_dict()
    out["received_at"] = received_at
    return out


class Collector:
    """Subscribe to the fleet's device topics and write what arrives into ``store``."""

    def __init__(
        self,
        store: Store,
        broker: str,
        topics: Topics,
        *,
        share_group: str | None = None,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        max_pending: int = 1_000_000,
        client_id: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.store = store
        self.topics = topics
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.stats = CollectorStats()
        self.touch_interval = 2.0
        self._seen: dict[str, float] = {}
        self._last_touch = 0.0
        self._queue: deque[tuple[str, str, bytes, float]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        kinds = ("state", "events", "telemetry")
        subs = []
        for kind in kinds:
            filt = topics.all_devices(kind)
            if share_group and kind != "state":
                # state is retained and small: every collector keeps its own full view of it
                filt = f"$share/{share_group}/{filt}"
            subs.append((filt, 1))
        self._filters = [topics.all_devices(k) for k in kinds]
        # persistent: a fixed client id and a kept session, so that the broker queues what arrives
        # while the collector is down (a restart loses nothing the broker could hold)
        self.link = MqttLink(broker, client_id=client_id, subscriptions=subs, on_message=self._on_message,
                             clean_start=not persistent)

    # MQTT thread -------------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self.topics.parse_device_topic(topic)
        if parsed is None or parsed[1] == "desired":
            return  # not ours (some brokers deliver retained messages nobody asked for)
        device_id, kind = parsed
        self.stats.received[kind] = self.stats.received.get(kind, 0) + 1
        if not payload:
            return  # a cleared retained message
        self._idle.clear()
        self._queue.append((kind, device_id, payload, time.time()))
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    # writer thread -----------------------------------------------------------------------------
    def _drain(self) -> list[tuple[str, str, bytes, float]]:
        items = []
        q = self._queue
        for _ in range(min(len(q), self.batch_size)):
            items.append(q.popleft())
        return items

    def _build(self, items: list[tuple[str, str, bytes, float]]) -> _Batch:
        states, telemetry, events = [], [], []
        seen: dict[str, float] = {}
        for kind, device_id, payload, at in items:
            try:
                if kind == "telemetry":
                    telemetry.append(telemetry_row(device_id, payload, at))
                elif kind == "events":
                    events.append(event_row(device_id, payload, at))
                else:
                    states.append(state_row(device_id, payload, at))
                    continue
            except SchemaError as exc:
                self.stats.rejected += 1
                if self.stats.rejected <= 20 or self.stats.rejected % 1000 == 0:
                    log.warning("rejected a %s message from %s: %s", kind, device_id, exc.message)
                continue
            seen[device_id] = max(at, seen.get(device_id, 0.0))
        return states, telemetry, events, seen

    def _write(self, batch: _Batch) -> None:
        states, telemetry, events, seen = batch
        # last-seen times are written at most every ``touch_interval`` (one upsert per device)
        for dev, at in seen.items():
            self._seen[dev] = max(at, self._seen.get(dev, 0.0))
        if states or time.monotonic() - self._last_touch >= self.touch_interval:
            seen, self._seen, self._last_touch = self._seen, {}, time.monotonic()
        else:
            seen = {}
        backoff = 0.2
        while True:
            try:
                t0 = time.perf_counter()
                t_ins, e_ins = self.store.write_batch(states, telemetry, events, seen)
                self.stats.last_batch_s = time.perf_counter() - t0
                break
            except FleetError as exc:
                self.stats.store_errors += 1
                log.warning("store write failed (%s); keeping %d messages and retrying", exc.message,
                            len(states) + len(telemetry) + len(events))
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
        self.stats.batches += 1
        self.stats.inserted_telemetry += t_ins
        self.stats.inserted_events += e_ins
        self.stats.duplicates += (len(telemetry) - t_ins) + (len(events) - e_ins)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write everything queued so far (called by the writer thread; tests may call it)."""
        while self._queue:
            if len(self._queue) > self.max_pending:
                excess = len(self._queue) - self.max_pending
                for _ in range(excess):
                    self._queue.popleft()
                self.stats.dropped += excess
                log.error("collector backlog over %d messages: dropped the %d oldest", self.max_pending, excess)
            items = self._drain()
            self._write(self._build(items))
        self._idle.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything received so far is written (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._queue and self._idle.is_set():
                return True
            self._wake.set()
            time.sleep(0.02)
        return False

    # lifecycle ---------------------------------------------------------------------------------
    def start(self, wait: float = 10.0) -> None:
        """Start the writer, then connect. Raises FleetError when the broker cannot be reached."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-collector", daemon=True)
        self._thread.start()
        self.link.start(wait)

    def stop(self) -> None:
        self.link.stop()
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(15)
        self._thread = None


def decode_summary(body: str) -> dict[str, Any]:
    """The ``summary`` object of a stored telemetry message."""
    return dict(json.loads(body).get("summary") or {})
