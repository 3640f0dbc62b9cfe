"""The dashboard in a real headless Chromium, served by the real fleet controller during a rollout
over simulated devices that speak the real protocol through a real Mosquitto.

The page's scripts poll the JSON API and render the fleet table, the rollouts and the charts;
Chromium runs them for a budget of virtual time, then we read the rendered DOM and save a
screenshot under the test's output folder.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from device_agent.protocol import Topics
from edgeml.fleet.controller import Controller
from edgeml.fleet.litefleet import LiteFleet, LiteProfile
from edgeml.settings import load_settings
from tests.brokers import MosquittoBroker
from tests.e2e.chromium import dump_dom, find_chromium, screenshot

CHROMIUM = find_chromium()
N_DEVICES = 8

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: run `bash .ci/system-deps.sh chromium`"),
]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_dashboard_shows_the_fleet_and_a_rollout_in_chromium(broker: MosquittoBroker, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    settings = load_settings(tmp_path / "home", env={}, broker=broker.url, fleet="browser")
    profiles = {"1.0.0": LiteProfile(latency_ms=2.0), "2.0.0": LiteProfile(latency_ms=2.2)}
    fleet = LiteFleet(broker.url, Topics("browser"), N_DEVICES, prefix="sim", version="1.0.0", profiles=profiles,
                      telemetry_interval=0.5, update_delay=0.1)
    controller = Controller(settings, http_port=0, tick_interval=0.3, refresh_timestamp=False)
    controller.start()
    fleet.start()
    try:
        base = controller.url
        assert base is not None
        _wait(lambda: len(_get(f"{base}/api/fleet")["devices"]) == N_DEVICES, 20, "every device in /api/fleet")
        # a rollout that stays running while the browser looks (long soak on its first stage)
        controller.start_rollout("digits", "2.0.0", stages="50,100", soak="10m", min_requests=10)
        _wait(lambda: any(d.get("version") == "2.0.0" for d in _get(f"{base}/api/fleet")["devices"]), 20,
              "the first cohort to run 2.0.0")
        _wait(lambda: any(s["points"] for s in _get(f"{base}/api/series?since=600")["series"]), 20,
              "telemetry points in /api/series")

        dom = dump_dom(CHROMIUM, f"{base}/", tmp_path / "chromium-profile", budget_ms=5000)
        (tmp_path / "dashboard.html").write_text(dom)
        shot = screenshot(CHROMIUM, f"{base}/", tmp_path / "dashboard.png", tmp_path / "chromium-profile")
    finally:
        fleet.stop()
        controller.stop()

    # the page polled the real API at least once and says it is live
    polls = re.search(r'data-polls="(\d+)"', dom)
    assert polls and int(polls.group(1)) >= 1, "the page never rendered an API answer"
    assert re.search(r'<span id="conn"[^>]*class="ok"[^>]*>live', dom), "the page does not say it is live"
    # the fleet table: one row per simulated device, with its version
    rows = re.findall(r'<tr data-device="(sim-\d{3})" data-version="([^"]*)"', dom)
    assert sorted(d for d, _ in rows) == [f"sim-{i:03d}" for i in range(N_DEVICES)]
    versions = {v for _, v in rows}
    assert "2.0.0" in versions and "1.0.0" in versions, f"expected both versions mid-rollout, got {versions}"
    # the rollout card: running, with its stages and gate rows
    card = re.search(r'<div class="rollout" data-rollout="[^"]+" data-state="running">(.*?)</table>', dom, re.S)
    assert card, "no running rollout card"
    assert "digits@2.0.0" in card.group(1) and "50%" in card.group(1) and 'data-gate="error_rate"' in card.group(1)
    # the latency chart draws a line per version with the simulated devices' points
    chart = re.search(r'<svg class="chart" id="chart-latency"[^>]*data-series="(\d+)"[^>]*>(.*?)</svg>', dom, re.S)
    assert chart and int(chart.group(1)) >= 1, "the latency chart has no series"
    paths = re.findall(r'<path [^>]*class="series" data-version="([^"]+)" data-points="(\d+)"', chart.group(2))
    assert paths and all(int(n) >= 1 for _, n in paths)
    assert {v for v, _ in paths} <= {"1.0.0", "2.0.0"} and "1.0.0" in {v for v, _ in paths}
    # a real screenshot was written
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
