"""Fixtures for release tests: a workstation home with keys, a Mosquitto, a provisioned device."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from device_agent.protocol.topics import Topics
from device_agent.updater import Updater
from edgeml.release.keys import init_keys
from edgeml.release.publish import publish
from edgeml.settings import Settings
from tests.brokers import MosquittoBroker
from tests.release.helpers import Raw, host_settings, make_variant, provision, updater


@dataclass
class Env:
    """One workstation + broker + device, for a test."""

    tmp: Path
    broker: MosquittoBroker
    settings: Settings
    raw: Raw
    meta: Path
    topics: Topics = field(default_factory=Topics)
    updaters: list[Updater] = field(default_factory=list)

    def publish(self, version: str, size: int = 150_000, seed: int = 0, name: str = "tiny") -> dict[str, Any]:
        model = make_variant(self.tmp / f"variant-{name}-{version}", name=name, size=size, seed=seed)
        result = publish(self.settings, model, version=version)
        result["model"] = model
        return result

    def updater(self, meta: Optional[Path] = None, **cfg: Any) -> Updater:
        up = updater(meta or self.meta, self.broker.url, **cfg)
        self.updaters.append(up)
        return up


@pytest.fixture
def env(request: pytest.FixtureRequest, broker: MosquittoBroker, tmp_path: Path) -> Iterator[Env]:
    """Keys (thresholds from ``@pytest.mark.thresholds(root, targets)``), an empty repository,
    a broker and a device provisioned with root v1."""
    marker = request.node.get_closest_marker("thresholds")
    root_t, targets_t = marker.args if marker else (1, 1)
    settings = host_settings(tmp_path / "home", broker.url)
    init_keys(settings, root_threshold=root_t, targets_threshold=targets_t)
    raw = Raw(broker.host, broker.port)
    e = Env(tmp_path, broker, settings, raw, provision(settings, tmp_path / "device"))
    yield e
    for up in e.updaters:
        up.close()
    raw.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "thresholds(root, targets): key thresholds for the env fixture")
