"""The controller end to end against a real Mosquitto and a real store, driven by lightweight
protocol devices (every number under the test's control). Full agents: test_simulator.py."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from device_agent.protocol import Topics
from edgeml.fleet.controller import Controller
from edgeml.fleet.litefleet import LiteFleet, LiteProfile
from edgeml.fleet.mqtt import wait_for
from edgeml.settings import load_settings

pytestmark = pytest.mark.slow

FAST = dict(tick_interval=0.2, alert_interval=0.5, baseline_s=60.0, refresh_timestamp=False)


def controller(tmp_path: Path, broker_url: str, fleet: str, **kw) -> Controller:  # type: ignore[no-untyped-def]
    settings = load_settings(tmp_path / "home", env={}, broker=broker_url, fleet=fleet)
    opts = dict(FAST, http_port=0, store_url=f"sqlite:///{tmp_path / 'fleet.db'}")
    opts.update(kw)
    return Controller(settings, broker_url, **opts).start()  # type: ignore[arg-type]


def get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_rollout_passes_every_stage_and_serves_the_api(tmp_path: Path, shared_broker) -> None:  # type: ignore[no-untyped-def]
    topics = Topics("lite-ok")
    devs = LiteFleet(shared_broker.url, topics, 24, telemetry_interval=0.3, update_delay=0.05,
                     profiles={"2.0.0": LiteProfile(latency_ms=2.05)}).start()
    c = controller(tmp_path, shared_broker.url, "lite-ok")
    try:
        assert wait_for(lambda: len(c.store.device_views()) == 24, 10)
        st = c.start_rollout("digits", "2.0.0", stages="10,50,100", soak="0.6s", min_devices=2, min_requests=50)
        assert st["previous_version"] == "1.0.0" and st["state"] == "running"
        assert wait_for(lambda: c.rollout_status("digits")["state"] != "running", 40), c.rollout_status("digits")
        st = c.rollout_status("digits")
        assert st["state"] == "completed", st["reason"]
        assert [h["event"] for h in st["history"]].count("stage_passed") == 3
        assert wait_for(lambda: set(devs.versions().values()) == {"2.0.0"}, 10)
        assert all(g["ok"] for g in st["gates"]), st["gates"]
        # the JSON API the dashboard reads (docs/INTERFACES.md §4)
        fleet = get(c.url + "/api/fleet")["devices"]  # type: ignore[operator]
        assert len(fleet) == 24 and {d["version"] for d in fleet} == {"2.0.0"}
        assert set(fleet[0]) >= {"device_id", "online", "model", "version", "previous_version", "update_state",
                                 "group", "last_seen", "p95_ms", "psi_max", "drift"}
        r = get(c.url + "/api/rollouts")["rollouts"][0]  # type: ignore[operator]
        assert r["stages"] == [10, 50, 100] and r["devices_at_version"] == 24 and r["state"] == "completed"
        series = get(c.url + "/api/series?since=120")["series"]  # type: ignore[operator]
        assert {(s["model"], s["version"]) for s in series} >= {("digits", "1.0.0"), ("digits", "2.0.0")}
        assert any(p["p95_ms"] and p["requests"] for s in series for p in s["points"])
        events = get(c.url + "/api/events?limit=5")["events"]  # type: ignore[operator]
        assert len(events) == 5 and events[0]["event"]
        with urllib.request.urlopen(c.url + "/metrics", timeout=5) as resp:  # type: ignore[operator]
            text = resp.read().decode()
        assert 'edgeml_fleet_devices_by_version{model="digits",version="2.0.0"} 24' in text
        with urllib.request.urlopen(c.url + "/", timeout=5) as resp:  # type: ignore[operator]
            assert b"<html" in resp.read().lower()
    finally:
        c.stop()
        devs.stop()


def test_slow_version_halts_at_first_stage_and_rolls_back(tmp_path: Path, shared_broker) -> None:  # type: ignore[no-untyped-def]
    topics = Topics("lite-bad")
    devs = LiteFleet(shared_broker.url, topics, 20, telemetry_interval=0.3, update_delay=0.05,
                     profiles={"3.0.0": LiteProfile(latency_ms=6.0)}).start()
    c = controller(tmp_path, shared_broker.url, "lite-bad")
    try:
        assert wait_for(lambda: len(c.store.device_views()) == 20, 10)
        c.start_rollout("digits", "3.0.0", stages="10,50,100", soak="30s", min_devices=2, min_requests=50)
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "halted", 30), c.rollout_status("digits")
        st = c.rollout_status("digits")
        assert st["stage_index"] == 0 and "p95_latency_ratio" in st["reason"]
        failing = [g for g in st["gates"] if g["ok"] is False]
        assert failing and failing[0]["name"] == "p95_latency_ratio" and failing[0]["value"] > 2
        assert wait_for(lambda: set(devs.versions().values()) == {"1.0.0"}, 10)
        first_cohort = devs.ever_received("3.0.0")
        r = c.store.find_rollout("digits")
        expected = {d for d in devs.devices if r.in_cohort(d)}
        # only the first stage ever saw it: 10 % of 20 raised to the minimum of 2 (more when the
        # hash puts more devices under 10 %)
        assert first_cohort == expected and len(r.cuts) == 1 and 2 <= len(expected) < 20
        assert any(a["rule"] == "rollout_halted" for a in c.store.alerts())
    finally:
        c.stop()
        devs.stop()


def test_update_failures_halt_and_restart_resumes(tmp_path: Path, shared_broker) -> None:  # type: ignore[no-untyped-def]
    topics = Topics("lite-restart")
    devs = LiteFleet(shared_broker.url, topics, 20, telemetry_interval=0.3, update_delay=0.05).start()
    c = controller(tmp_path, shared_broker.url, "lite-restart")
    try:
        assert wait_for(lambda: len(c.store.device_views()) == 20, 10)
        c.start_rollout("digits", "2.0.0", stages="10,50,100", soak="1.5s", min_devices=2, min_requests=50)
        assert wait_for(lambda: c.rollout_status("digits")["stage_index"] >= 1, 30)
    finally:
        c.stop()  # killed mid-rollout: nothing in memory survives
    c = controller(tmp_path, shared_broker.url, "lite-restart")
    try:
        st = c.rollout_status("digits")
        assert st["state"] == "running" and st["stage_index"] >= 1
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "completed", 40), c.rollout_status("digits")
        assert wait_for(lambda: set(devs.versions().values()) == {"2.0.0"}, 10)
        # a version whose update fails on the device halts on update_failures
        devs.profiles["2.1.0"] = LiteProfile(fail_update=True)
        c.start_rollout("digits", "2.1.0", stages="10,100", soak=0, min_devices=2, min_requests=50)
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "halted", 30), c.rollout_status("digits")
        assert "update_failures" in c.rollout_status("digits")["reason"]
    finally:
        c.stop()
        devs.stop()


def test_offline_device_returning_converges_and_operator_commands(tmp_path: Path, shared_broker) -> None:  # type: ignore[no-untyped-def]
    topics = Topics("lite-offline")
    devs = LiteFleet(shared_broker.url, topics, 20, telemetry_interval=0.3, update_delay=0.05).start()
    c = controller(tmp_path, shared_broker.url, "lite-offline")
    try:
        assert wait_for(lambda: len(c.store.device_views()) == 20, 10)
        away = "lite-007"
        devs.take_offline(away)
        assert wait_for(lambda: c.store.device(away)["online"] is False, 10)  # type: ignore[index]
        c.start_rollout("digits", "2.0.0", stages="50,100", soak="0.5s", min_devices=2, min_requests=50)
        st = c.command("digits", "pause")
        assert st["state"] == "paused"
        time.sleep(1.0)
        assert c.rollout_status("digits")["stage_index"] == 0
        c.command("digits", "resume")
        # the rollout does not wait for the offline device; it reaches 100 % without it
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "completed", 40), c.rollout_status("digits")
        assert devs.versions()[away] == "1.0.0"
        devs.bring_online(away)
        assert wait_for(lambda: devs.versions()[away] == "2.0.0", 10)
        assert wait_for(lambda: c.store.device(away)["version"] == "2.0.0", 10)  # type: ignore[index]
    finally:
        c.stop()
        devs.stop()


def test_the_controller_on_postgresql(tmp_path: Path, shared_broker, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    import uuid

    topics = Topics("lite-pg")
    devs = LiteFleet(shared_broker.url, topics, 12, telemetry_interval=0.3, update_delay=0.05,
                     profiles={"3.0.0": LiteProfile(latency_ms=6.0)}).start()
    c = controller(tmp_path, shared_broker.url, "lite-pg", store_url=pg_url, store_prefix=f"c{uuid.uuid4().hex[:8]}_")
    try:
        assert wait_for(lambda: len(c.store.device_views()) == 12, 10)
        c.start_rollout("digits", "2.0.0", stages="25,100", soak="0.5s", min_devices=2, min_requests=50)
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "completed", 40), c.rollout_status("digits")
        c.start_rollout("digits", "3.0.0", stages="25,100", soak="30s", min_devices=2, min_requests=50, confirm=1)
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "halted", 40), c.rollout_status("digits")
        assert wait_for(lambda: set(devs.versions().values()) == {"2.0.0"}, 10)
    finally:
        c.stop()
        devs.stop()
        c.store.drop_all()


def test_alert_with_auto_rollback_halts_the_rollout(tmp_path: Path, shared_broker) -> None:  # type: ignore[no-untyped-def]
    from edgeml.fleet.alerts import AlertRule

    topics = Topics("lite-alert")
    devs = LiteFleet(shared_broker.url, topics, 10, telemetry_interval=0.3, update_delay=0.05,
                     profiles={"2.0.0": LiteProfile(error_rate=0.3)}).start()
    rule = AlertRule("error_rate", "error_rate", ">", 0.05, window_s=30, min_requests=50,
                     actions=("log", "auto_rollback"))
    c = controller(tmp_path, shared_broker.url, "lite-alert", alert_rules=[rule])
    try:
        assert wait_for(lambda: len(c.store.device_views()) == 10, 10)
        # the gates do not look at errors here: the alert rule is what stops it
        c.start_rollout("digits", "2.0.0", stages="30,100", soak="60s", min_devices=2, min_requests=50,
                        gates=["update_failures<=0"])
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "halted", 30), c.rollout_status("digits")
        assert c.rollout_status("digits")["reason"].startswith("alert error_rate: digits 2.0.0")
        assert wait_for(lambda: set(devs.versions().values()) == {"1.0.0"}, 10)
        assert any(a["rule"] == "error_rate" and a["version"] == "2.0.0" for a in c.store.alerts())
    finally:
        c.stop()
        devs.stop()


def test_desired_states_come_back_after_the_broker_lost_them(tmp_path: Path, broker) -> None:  # type: ignore[no-untyped-def]
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from device_agent.protocol import DesiredState

    topics = Topics("lite-lost")
    devs = LiteFleet(broker.url, topics, 5, telemetry_interval=0.3, update_delay=0.05).start()
    c = controller(tmp_path, broker.url, "lite-lost")
    try:
        assert wait_for(lambda: len(c.store.device_views()) == 5, 10)
        c.start_rollout("digits", "2.0.0", stages="100", soak=0, min_requests=50)
        assert wait_for(lambda: c.rollout_status("digits")["state"] == "completed", 30)
        # the broker comes back empty (its persistence lost): no retained desired state anywhere
        broker.stop()
        for f in Path(broker.workdir).glob("*.db"):
            f.unlink()
        broker.start()
        assert wait_for(lambda: c.collector.link.connects >= 2, 20)  # type: ignore[union-attr]
        got: dict[str, str] = {}
        lock = threading.Lock()

        def on_msg(_c, _u, msg) -> None:  # type: ignore[no-untyped-def]
            if msg.retain and msg.payload:
                with lock:
                    got[msg.topic.split("/")[-2]] = DesiredState.from_json(msg.payload).version

        def probe() -> dict[str, str]:
            got.clear()
            cl = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lost-probe")
            cl.on_message = on_msg
            cl.connect(broker.host, broker.port)
            cl.subscribe(topics.all_devices("desired"), 1)
            cl.loop_start()
            time.sleep(0.5)
            cl.loop_stop()
            cl.disconnect()
            with lock:
                return dict(got)

        assert wait_for(lambda: probe() == {d: "2.0.0" for d in devs.devices}, 20), probe()
    finally:
        c.stop()
        devs.stop()
