"""Lightweight protocol devices: many simulated devices that speak the real protocol (retained
state with a last will, events, telemetry windows with sequence numbers, following the retained
desired state) without running a model. For controller tests that need control over every number,
and for benchmarks at 1,000 devices where full agents would measure the agents, not the fleet.

The behaviour of a version is a :class:`LiteProfile` (latency, errors, class skew, PSI, whether
its update fails on the device). With ``fetch=True`` an update really fetches the target's chunk
index and chunks from the broker and checks every chunk against its address, so the time for a
model to reach the fleet includes moving its bytes.

Full agents built from ``device_agent`` are in :mod:`edgeml.fleet.simulator`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from device_agent.protocol import (
    Event,
    Histogram,
    LatencyHistogram,
    ReportedState,
    Telemetry,
    TelemetrySummary,
    Topics,
    topic_matches,
)
from device_agent.protocol.messages import DesiredState
from edgeml.fleet.mqtt import MqttLink

log = logging.getLogger("edgeml.fleet.litefleet")


@dataclass
class LiteProfile:
    """How a version behaves on a lite device."""

    latency_ms: float = 2.0
    error_rate: float = 0.0
    classes: Sequence[float] = (0.25, 0.25, 0.25, 0.25)
    psi: float = 0.02
    fail_update: bool = False


@dataclass
class _Dev:
    device_id: str
    link: MqttLink
    version: Optional[str]
    model: str
    group: Optional[str] = None
    previous: Optional[str] = None
    update_state: str = "committed"
    seq: int = 0
    event_seq: int = 0
    online: bool = True
    target: Optional[str] = None
    received_versions: set[str] = field(default_factory=set)


class LiteFleet:
    """``n`` lite devices named ``<prefix>-000``... . One MQTT connection per device (with its last
    will) up to ``shared_links`` devices; beyond, devices share ``shared_links`` connections."""

    def __init__(
        self,
        broker: str,
        topics: Topics,
        n: int,
        *,
        prefix: str = "lite",
        model: str = "digits",
        version: Optional[str] = "1.0.0",
        profiles: Optional[dict[str, LiteProfile]] = None,
        telemetry_interval: float = 1.0,
        requests_per_window: int = 100,
        update_delay: float = 0.2,
        groups: Optional[Sequence[str]] = None,
        shared_links: int = 0,
        fetch: bool = False,
        seed: int = 0,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.model = model
        self.profiles = profiles or {}
        self.telemetry_interval = telemetry_interval
        self.requests_per_window = requests_per_window
        self.update_delay = update_delay
        self.fetch = fetch
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._chunks: dict[str, bytes] = {}
        self._chunk_waiters: dict[str, threading.Event] = {}
        self.updates_done: dict[str, float] = {}
        ids = [f"{prefix}-{i:03d}" for i in range(n)]
        self.devices: dict[str, _Dev] = {}
        links: list[MqttLink] = []
        per_device = shared_links <= 0
        nlinks = n if per_device else max(1, min(shared_links, n))
        for k in range(nlinks):
            members = [ids[k]] if per_device else ids[k::nlinks]
            subs = [(topics.desired(d), 1) for d in members]
            link = MqttLink(broker, client_id=f"{prefix}-link-{k}", subscriptions=subs,
                            on_message=self._on_message)
            if per_device:
                off = ReportedState(device_id=members[0], online=False)
                link.client.will_set(topics.state(members[0]), off.to_json(), qos=1, retain=True)
            links.append(link)
            for d in members:
                group = groups[ids.index(d) % len(groups)] if groups else None
                self.devices[d] = _Dev(d, link, version, model, group)
        self.links = links

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> LiteFleet:
        for link in self.links:
            link.start(10)
        for d in self.devices.values():
            self.report_state(d)
        t = threading.Thread(target=self._telemetry_loop, name="lite-telemetry", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for link in self.links:
            link.stop()

    def take_offline(self, device_id: str) -> None:
        """Drop the device's connection without a goodbye (the broker sends its last will)."""
        d = self.devices[device_id]
        d.online = False
        d.link.client._sock_close()  # an abrupt loss, like a power cut  # noqa: SLF001
        d.link.stop()

    def bring_online(self, device_id: str) -> None:
        d = self.devices[device_id]
        link = MqttLink(self.broker, client_id=d.link.client_id, subscriptions=d.link.subscriptions,
                        on_message=self._on_message)
        off = ReportedState(device_id=device_id, online=False)
        link.client.will_set(self.topics.state(device_id), off.to_json(), qos=1, retain=True)
        d.link = link
        d.online = True
        link.start(10)
        self.report_state(d)

    # protocol ----------------------------------------------------------------------------------
    def report_state(self, d: _Dev) -> None:
        st = ReportedState(device_id=d.device_id, online=d.online, model=d.model, version=d.version,
                           previous_version=d.previous, update_state=d.update_state, update_target=d.target,
                           group=d.group, runtime="lite", ts=time.time())
        d.link.publish(self.topics.state(d.device_id), st.to_json(), qos=1, retain=True)

    def _event(self, d: _Dev, name: str, to_state: str, version: Optional[str], reason: str = "") -> None:
        d.event_seq += 1
        ev = Event(device_id=d.device_id, seq=d.event_seq, ts=time.time(), event=name, to_state=to_state,
                   model=d.model, version=version, reason=reason)
        d.link.publish(self.topics.events(d.device_id), ev.to_json(), qos=1)

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if "/repo/" in topic:
            self._on_repo(topic, payload)
            return
        parsed = self.topics.parse_device_topic(topic)
        if parsed is None or parsed[1] != "desired" or parsed[0] not in self.devices or not payload:
            return
        d = self.devices[parsed[0]]
        try:
            want = DesiredState.from_json(payload)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: bad desired state: %s", d.device_id, exc)
            return
        if want.version == d.version or want.version == d.target:
            return
        d.target = want.version
        threading.Thread(target=self._update, args=(d, want), daemon=True).start()

    def _update(self, d: _Dev, want: DesiredState) -> None:
        version = want.version
        with self._lock:
            d.update_state = "downloading"
        self._event(d, "start", "downloading", version)
        self.report_state(d)
        if self.fetch and version != d.previous:
            self._fetch(d, want.model, version)
        else:
            time.sleep(self.update_delay)
        profile = self.profiles.get(version, LiteProfile())
        if d.target != version:
            return  # superseded
        if profile.fail_update:
            with self._lock:
                d.update_state, d.target = "rolled_back", None
            self._event(d, "probation_failed", "rolled_back", version, "nonfinite outputs in probation")
        else:
            with self._lock:
                d.previous, d.version, d.update_state, d.target = d.version, version, "committed", None
                d.received_versions.add(version)
                self.updates_done[d.device_id] = time.time()
            self._event(d, "probation_passed", "committed", version)
        self.report_state(d)

    # chunk fetch (bench) -----------------------------------------------------------------------
    def _on_repo(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._chunks[topic] = payload
            ev = self._chunk_waiters.get(topic)
        if ev:
            ev.set()

    def _get_retained(self, d: _Dev, topic: str, timeout: float = 30.0) -> bytes:
        with self._lock:
            if topic in self._chunks:
                return self._chunks[topic]
            ev = self._chunk_waiters.setdefault(topic, threading.Event())
        d.link.client.subscribe(topic, 1)
        if not ev.wait(timeout):
            raise TimeoutError(f"no retained message on {topic}")
        return self._chunks[topic]

    def _fetch(self, d: _Dev, model: str, version: str) -> None:
        """Fetch the target's index and chunks (cached per process, as devices sharing a
        connection would each receive them anyway) and check every chunk against its address."""
        prefix = f"{self.topics.repo}/targets/models/{model}/{version}/"
        index_topic = next((t for t in self._chunks if t.startswith(prefix)), None)
        if index_topic is None:
            d.link.client.subscribe(prefix + "+", 1)
            deadline = time.time() + 30
            while index_topic is None and time.time() < deadline:
                time.sleep(0.02)
                with self._lock:
                    index_topic = next((t for t in self._chunks if t.startswith(prefix)), None)
            if index_topic is None:
                raise TimeoutError(f"no chunk index for {model} {version}")
        index = json.loads(self._chunks[index_topic])
        for digest, _length in index["chunks"]:
            data = self._get_retained(d, f"{self.topics.repo}/chunks/{digest}")
            if hashlib.sha256(data).hexdigest() != digest:
                raise ValueError(f"chunk {digest} does not match its address")

    # telemetry ---------------------------------------------------------------------------------
    def window(self, d: _Dev, start: float, end: float) -> Telemetry:
        profile = self.profiles.get(d.version or "", LiteProfile())
        n = self.requests_per_window
        lat = LatencyHistogram()
        for _ in range(n):
            lat.add(profile.latency_ms * self.rng.lognormvariate(0, 0.15))
        errors = sum(1 for _ in range(n) if self.rng.random() < profile.error_rate)
        classes: dict[str, int] = {}
        for label in self.rng.choices([str(i) for i in range(len(profile.classes))], profile.classes, k=n):
            classes[label] = classes.get(label, 0) + 1
        conf = Histogram.zero([round(0.1 * i, 1) for i in range(1, 10)])
        conf.add(0.95, n)
        summary = TelemetrySummary(requests=n, errors=errors, latency=lat, classes=classes, confidence=conf,
                                   duration_s=end - start, windows=1)
        d.seq += 1
        return Telemetry(device_id=d.device_id, seq=d.seq, window_start=start, window_end=end, model=d.model,
                         version=d.version, summary=summary, psi=[profile.psi], drift=profile.psi > 0.2)

    def _telemetry_loop(self) -> None:
        last = time.time()
        while not self._stop.wait(self.telemetry_interval):
            now = time.time()
            for d in list(self.devices.values()):
                if not d.online or d.version is None or d.update_state != "committed":
                    continue
                msg = self.window(d, last, now)
                d.link.publish(self.topics.telemetry(d.device_id), msg.to_json(), qos=1)
            last = now

    # views -------------------------------------------------------------------------------------
    def versions(self) -> dict[str, Optional[str]]:
        return {d.device_id: d.version for d in self.devices.values()}

    def ever_received(self, version: str) -> set[str]:
        return {d.device_id for d in self.devices.values() if version in d.received_versions}

    def status(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for d in self.devices.values():
            counts[d.version or "-"] = counts.get(d.version or "-", 0) + 1
        return {"devices": len(self.devices), "by_version": counts}


def matches_any(filters: Sequence[str], topic: str) -> bool:
    return any(topic_matches(f, topic) for f in filters)
