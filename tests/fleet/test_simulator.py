"""Must-show rollouts over a simulated fleet of REAL agents (device_agent.agent.Agent) in one
process, with signed releases published to a real Mosquitto and the controller on a real store.

The tests share one fleet and run in order: each starts from every device on the last good
version. Faults come through the agents' runtime_wrapper (3.0.0 is 3x slower).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.protocol import DesiredState, Topics, topic_matches
from edgeml.fleet.controller import Controller
from edgeml.fleet.mqtt import wait_for
from edgeml.fleet.simulator import FaultSpec, Simulator
from tests.agent.harness import Publisher
from tests.agent.modelkit import build_models

pytestmark = pytest.mark.slow

N = 20
FLEET = "simfleet"
NAME = "tiny"
GOOD_GATES = ["update_failures<=0", "error_rate<=0.01", "p95_latency_ratio<=1.5", "psi<=0.2",
              "prediction_shift<=0.1"]


class DesiredLog:
    """Records every desired state published to any device (who was ever asked for what)."""

    def __init__(self, host: str, port: int) -> None:
        self.filter = Topics(FLEET).all_devices("desired")
        self.seen: list[tuple[str, DesiredState]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"desired-log-{id(self)}")
        self.client.on_connect = lambda c, *_: c.subscribe(self.filter, 1)
        self.client.on_message = self._on
        self.client.connect(host, port)
        self.client.loop_start()

    def _on(self, _c: Any, _u: Any, msg: Any) -> None:
        if topic_matches(self.filter, msg.topic) and msg.payload:
            with self.lock:
                self.seen.append((msg.topic.split("/")[-2], DesiredState.from_json(msg.payload)))

    def asked_for(self, version: str) -> set[str]:
        with self.lock:
            return {dev for dev, d in self.seen if d.version == version}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Env:
    def __init__(self, tmp: Path, broker: Any, models: dict[str, Path]) -> None:
        self.broker = broker
        self.pub = Publisher(tmp / "home", broker.url, models, name=NAME)
        self.pub.settings = type(self.pub.settings)(**{**self.pub.settings.__dict__, "fleet": FLEET})
        self.settings = self.pub.settings
        self.store_url = f"sqlite:///{tmp / 'fleet.db'}"
        self.log = DesiredLog(broker.host, broker.port)
        self.sim: Simulator | None = None

    def controller(self) -> Controller:
        return Controller(self.settings, self.broker.url, self.store_url, http_port=None, tick_interval=0.25,
                          alert_interval=1.0, baseline_s=60.0, refresh_timestamp=False).start()

    def versions(self) -> dict[str, Any]:
        assert self.sim is not None
        return self.sim.versions()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, shared_broker: Any) -> Iterator[Env]:
    models = build_models(Path(request.config.cache.mkdir("edgeml-agent-models")))
    e = Env(tmp_path_factory.mktemp("simfleet"), shared_broker, models)
    # the same network under five versions: healthy versions must look alike to the gates
    for model, version in (("good1", "1.0.0"), ("good1", "2.0.0"), ("good1", "3.0.0"), ("good1", "4.0.0"),
                           ("good1", "5.0.0"), ("good1", "6.0.0")):
        e.pub.publish(model, version)
    e.sim = Simulator(e.settings, N, broker_url=shared_broker.url, faults=[FaultSpec.parse("3.0.0:latency_x=3"),
                                                                    FaultSpec.parse("6.0.0:shift=1")],
                      rate=20.0, device_ms=3.0, telemetry_interval=0.5, probation_requests=20, probation_seconds=0.5,
                      base_dir=tmp_path_factory.mktemp("agents"))
    e.sim.start()
    c = e.controller()
    try:
        assert wait_for(lambda: len(c.store.device_views()) == N, 30)
        # the first release reaches every device at once (no previous version: nothing to compare)
        c.start_rollout(NAME, "1.0.0", stages="100", soak=0, min_requests=10)
        assert wait_for(lambda: c.rollout_status(NAME)["state"] == "completed", 60), c.rollout_status(NAME)
        assert wait_for(lambda: set(e.versions().values()) == {"1.0.0"}, 30), e.versions()
    finally:
        c.stop()
    yield e
    e.sim.stop()
    e.log.close()


def test_rollout_over_20_real_agents_passes_every_stage(env: Env) -> None:
    c = env.controller()
    try:
        c.start_rollout(NAME, "2.0.0", stages="10,50,100", soak="1s", min_devices=2, min_requests=150, confirm="4s",
                        gates=GOOD_GATES)
        assert wait_for(lambda: c.rollout_status(NAME)["state"] != "running", 90), c.rollout_status(NAME)
        st = c.rollout_status(NAME)
        assert st["state"] == "completed", (st["reason"], st["gates"])
        passed = [h for h in st["history"] if h["event"] == "stage_passed"]
        assert len(passed) == 3 and all(g["ok"] for h in passed for g in h["gates"])
        assert wait_for(lambda: set(env.versions().values()) == {"2.0.0"}, 30), env.versions()
        assert st["devices_at_version"] == N
    finally:
        c.stop()


def test_slow_version_halts_at_first_stage_and_rolls_back(env: Env) -> None:
    c = env.controller()
    try:
        r = c.start_rollout(NAME, "3.0.0", stages="10,50,100", soak="60s", min_devices=2, min_requests=150,
                            confirm="4s", gates=GOOD_GATES)
        assert wait_for(lambda: c.rollout_status(NAME)["state"] == "halted", 90), c.rollout_status(NAME)
        st = c.rollout_status(NAME)
        assert st["stage_index"] == 0 and "p95_latency_ratio" in st["reason"], st["reason"]
        bad = next(g for g in st["gates"] if g["name"] == "p95_latency_ratio")
        assert bad["ok"] is False and bad["value"] > 1.5
        assert wait_for(lambda: set(env.versions().values()) == {"2.0.0"}, 30), env.versions()
        # nobody outside the first cohort was ever asked for (or ran) 3.0.0
        cohort = {d for d in env.versions() if c.store.rollout(r["id"]).in_cohort(d)}  # type: ignore[union-attr]
        assert env.log.asked_for("3.0.0") == cohort and 2 <= len(cohort) < N
        assert len(c.store.rollout(r["id"]).cuts) == 1  # type: ignore[union-attr]
        ran = {e["device_id"] for e in c.store.events(limit=10_000, version="3.0.0")}
        assert ran <= cohort
        assert any(a["rule"] == "rollout_halted" for a in c.store.alerts())
    finally:
        c.stop()


def test_controller_killed_mid_rollout_resumes(env: Env) -> None:
    c = env.controller()
    try:
        c.start_rollout(NAME, "4.0.0", stages="10,50,100", soak="2s", min_devices=2, min_requests=150, confirm="4s",
                        gates=GOOD_GATES)
        assert wait_for(lambda: c.rollout_status(NAME)["stage_index"] >= 1, 60), c.rollout_status(NAME)
    finally:
        c.stop()
    time.sleep(1.0)  # the fleet runs on without a controller
    c = env.controller()
    try:
        st = c.rollout_status(NAME)
        assert st["state"] == "running" and st["stage_index"] >= 1
        assert wait_for(lambda: c.rollout_status(NAME)["state"] != "running", 90), c.rollout_status(NAME)
        assert c.rollout_status(NAME)["state"] == "completed", c.rollout_status(NAME)["reason"]
        assert wait_for(lambda: set(env.versions().values()) == {"4.0.0"}, 30), env.versions()
    finally:
        c.stop()


def test_offline_device_returning_mid_rollout_converges(env: Env) -> None:
    assert env.sim is not None
    c = env.controller()
    try:
        away = env.sim.ids[3]
        env.sim.stop_device(away)
        assert wait_for(lambda: c.store.device(away)["online"] is False, 15)  # type: ignore[index]
        c.start_rollout(NAME, "5.0.0", stages="30,60,100", soak="1s", min_devices=2, min_requests=150, confirm="4s",
                        gates=GOOD_GATES)
        assert wait_for(lambda: c.rollout_status(NAME)["stage_index"] >= 1, 60), c.rollout_status(NAME)
        env.sim.start_device(away)  # back mid-rollout
        r = c.store.rollout(c.rollout_status(NAME)["id"])
        assert r is not None
        assert wait_for(lambda: c.rollout_status(NAME)["state"] != "running", 90), c.rollout_status(NAME)
        assert c.rollout_status(NAME)["state"] == "completed"
        assert wait_for(lambda: env.versions().get(away) == "5.0.0", 30), env.versions()
        assert set(env.versions().values()) == {"5.0.0"}
    finally:
        c.stop()


def test_shadow_first_catches_drifted_predictions_before_anyone_serves_them(env: Env) -> None:
    before = set(env.versions().values())
    c = env.controller()
    try:
        c.start_rollout(NAME, "6.0.0", stages="50,100", soak="30s", shadow_first=True, shadow_fraction=0.3,
                        min_devices=2, min_requests=60, confirm="2s")
        assert wait_for(lambda: c.rollout_status(NAME)["state"] == "halted", 60), c.rollout_status(NAME)
        st = c.rollout_status(NAME)
        assert st["stage_index"] == 0 and st["modes"][0] == "shadow"
        assert "shadow_agreement" in st["reason"], st["reason"]
        agreement = next(g for g in st["gates"] if g["name"] == "shadow_agreement")
        assert agreement["ok"] is False and agreement["value"] < 0.9
        # it ran beside the active model on the cohort, and nobody ever served it
        with env.log.lock:
            shadowed = {dev for dev, d in env.log.seen if d.shadow_version == "6.0.0"}
        assert shadowed and env.log.asked_for("6.0.0") == set()
        assert set(env.versions().values()) == before
    finally:
        c.stop()


def test_drifted_inputs_show_as_drift_per_device(env: Env) -> None:
    assert env.sim is not None
    drifted = set(env.sim.ids[:3])
    for dev in drifted:
        env.sim.device_knobs[dev] = {"input_shift": 1.0}
    c = env.controller()
    try:
        def flagged() -> set[str]:
            return {d["device_id"] for d in c.fleet() if d["drift"]}

        assert wait_for(lambda: flagged() == drifted, 20), flagged()
        psi = {d["device_id"]: d["psi_max"] for d in c.fleet()}
        assert min(psi[d] for d in drifted) > 0.2
    finally:
        for dev in drifted:
            env.sim.device_knobs.pop(dev, None)
        c.stop()
