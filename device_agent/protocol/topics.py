"""The MQTT topic tree, under a configurable root (default ``edgeml/<fleet>``).

| topic                       | from        | retained | what                                     |
|-----------------------------|-------------|----------|------------------------------------------|
| ``repo/...``                | workstation | yes      | update metadata and artifact chunks      |
| ``devices/<id>/desired``    | controller  | yes      | which model and version to run           |
| ``devices/<id>/state``      | device      | yes      | what it runs; last will marks it offline |
| ``devices/<id>/events``     | device      | no       | update lifecycle events with reasons     |
| ``devices/<id>/telemetry``  | device      | no       | one summary per window, with a sequence  |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from device_agent.errors import ConfigError

_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
DEVICE_KINDS = ("desired", "state", "events", "telemetry")


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it is a safe single topic segment; raise ConfigError otherwise."""
    if not _SEGMENT.match(value or ""):
        raise ConfigError(
            f"{what} {value!r} is not a valid topic segment",
            hint="use 1-128 letters, digits, '_', '-' or '.' (no '/', '+', '#' or spaces)",
        )
    return value


@dataclass(frozen=True)
class Topics:
    """Topic names for one fleet. ``Topics("plant-a").desired("dev1")`` ->
    ``edgeml/plant-a/devices/dev1/desired``."""

    fleet: str = "default"
    prefix: str = "edgeml"

    def __post_init__(self) -> None:
        check_segment(self.fleet, "fleet")
        for part in self.prefix.split("/"):
            check_segment(part, "topic prefix segment")

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.fleet}"

    # repository ---------------------------------------------------------------
    @property
    def repo(self) -> str:
        return f"{self.root}/repo"

    def repo_metadata(self, filename: str) -> str:
        """Topic of a metadata file, e.g. ``repo/metadata/2.root.json``."""
        return f"{self.repo}/metadata/{filename}"

    def repo_target_index(self, target_path: str) -> str:
        """Topic of a target's chunk index (JSON list of chunk hashes)."""
        return f"{self.repo}/targets/{target_path}"

    def repo_chunk(self, digest: str) -> str:
        """Topic of one content-addressed chunk (sha256 hex of its bytes)."""
        return f"{self.repo}/chunks/{digest}"

    # devices ------------------------------------------------------------------
    def device(self, device_id: str, kind: str) -> str:
        check_segment(device_id, "device id")
        if kind not in DEVICE_KINDS:
            raise ValueError(f"unknown device topic kind {kind!r}")
        return f"{self.root}/devices/{device_id}/{kind}"

    def desired(self, device_id: str) -> str:
        return self.device(device_id, "desired")

    def state(self, device_id: str) -> str:
        return self.device(device_id, "state")

    def events(self, device_id: str) -> str:
        return self.device(device_id, "events")

    def telemetry(self, device_id: str) -> str:
        return self.device(device_id, "telemetry")

    def all_devices(self, kind: str) -> str:
        """Wildcard subscription for one kind across the fleet."""
        if kind not in DEVICE_KINDS:
            raise ValueError(f"unknown device topic kind {kind!r}")
        return f"{self.root}/devices/+/{kind}"

    def parse_device_topic(self, topic: str) -> tuple[str, str] | None:
        """``(device_id, kind)`` for a device topic of this fleet, else ``None``."""
        head = f"{self.root}/devices/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or parts[1] not in DEVICE_KINDS or not _SEGMENT.match(parts[0]):
            return None
        return parts[0], parts[1]


def topic_matches(subscription: str, topic: str) -> bool:
    """MQTT wildcard match. Clients use it to ignore topics they did not ask for (some
    brokers deliver retained messages to clients that never subscribed to them)."""
    sub = subscription.split("/")
    top = topic.split("/")
    for i, s in enumerate(sub):
        if s == "#":
            return True
        if i >= len(top):
            return False
        if s != "+" and s != top[i]:
            return False
    return len(sub) == len(top)
