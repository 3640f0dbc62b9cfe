"""The flaky-network knob on real agents: their connections drop and come back by themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeml.fleet.mqtt import wait_for
from edgeml.fleet.simulator import DeviceFault, Simulator

pytestmark = pytest.mark.slow


def test_flaky_devices_reconnect_and_the_others_stay(tmp_path: Path, shared_broker: Any) -> None:
    from edgeml.release.keys import init_keys
    from edgeml.settings import load_settings

    settings = load_settings(tmp_path / "home", env={}, broker=shared_broker.url, fleet="flaky")
    init_keys(settings)
    sim = Simulator(settings, 4, device_faults=[DeviceFault.parse("0.5:flaky=120")], base_dir=tmp_path / "agents")
    flaky = {d for d, k in sim.device_knobs.items() if "flaky" in k}
    assert len(flaky) == 2
    sim.start()
    try:
        def connects(dev: str) -> int:
            return int(sim.agents[dev].transport.connects)

        assert wait_for(lambda: all(connects(d) >= 3 for d in flaky), 20), {d: connects(d) for d in sim.ids}
        assert all(connects(d) == 1 for d in set(sim.ids) - flaky)
        assert wait_for(lambda: all(sim.agents[d].transport.connected.is_set() for d in sim.ids), 10)
    finally:
        sim.stop()
