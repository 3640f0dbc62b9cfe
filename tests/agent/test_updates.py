"""Updates end to end, in process: real signed releases (edgeml.release.publish), the real
Updater, real Mosquitto (stopped/restarted by the tests), real LiteRT."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.agent import Agent
from device_agent.agent.slots import SlotStore
from tests.agent.conftest import agent_config
from tests.agent.harness import Publisher, Watcher, wait_until

X = np.array([[0.2, 0.4, 0.6, 0.8]], dtype=np.float32)


@pytest.fixture
def pub(tmp_path: Path, broker: Any, tiny_models: dict[str, Path]) -> Publisher:
    return Publisher(tmp_path / "host", broker.url, tiny_models)


@pytest.fixture
def watcher(broker: Any) -> Iterator[Watcher]:
    w = Watcher(broker.host, broker.port, persistent=True)
    yield w
    w.close()


def start_agent(tmp_path: Path, broker: Any, pub: Publisher, **kw: Any) -> Agent:
    kw.setdefault("model", "tiny")
    cfg = agent_config(tmp_path, broker.url, trusted_root=pub.root, update_timeout=3.0, **kw)
    return Agent(cfg).start()


def at(agent: Agent, version: str, state: str = "committed") -> bool:
    st = agent.status()
    return st["version"] == version and st["update_state"] == state


def test_follows_newest_release_reports_state_events_and_telemetry(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    pub.publish("good1", "1.0.0")
    agent = start_agent(tmp_path, broker, pub)
    try:
        watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0 committed")
        assert agent.predict(X).version == "1.0.0"
        pub.publish("good2", "2.0.0")
        watcher.wait_for(lambda: at(agent, "2.0.0"), what="2.0.0 committed")
        flow = ["start", "downloaded", "verified", "activate", "self_test_passed", "probation_passed"]
        watcher.wait_for(
            lambda: [e.event for e in watcher.events() if e.version == "2.0.0"][:6] == flow, what="the update's events"
        )
        state = watcher.wait_for(
            lambda: [s for s in watcher.of("state") if s.version == "2.0.0" and s.update_state == "committed"],
            what="retained state",
        )[-1]
        assert state.online and state.previous_version == "1.0.0" and state.runtime == "litert"
        telemetry = watcher.wait_for(lambda: [t for t in watcher.of("telemetry") if t.summary.requests], what="tel")
        assert telemetry[0].model == "tiny" and telemetry[0].summary.latency.count >= 1
    finally:
        agent.stop()
    # a clean stop reports the device offline (a crash leaves the same through the last will)
    last = watcher.wait_for(lambda: [s for s in watcher.of("state") if not s.online], what="offline state")[-1]
    assert last.version == "2.0.0" and last.device_id == "dev-t1"


def test_broker_restarted_mid_download_resumes_and_completes(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    pub.publish("good1", "1.0.0")
    agent = start_agent(tmp_path, broker, pub)
    try:
        watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0 committed")
        calls: list[tuple[int, int]] = []

        def restart_once(done: int, total: int) -> None:
            calls.append((done, total))
            if len(calls) == 1:
                assert 0 < done < total
                broker.restart()  # the download is cut in the middle

        agent.updates.on_progress = restart_once
        stats = agent.updates.updater().fetcher.stats
        before = stats.chunks_fetched + stats.chunks_from_cache
        pub.publish("big", "2.0.0")
        watcher.wait_for(lambda: at(agent, "2.0.0"), timeout=40, what="2.0.0 committed after the restart")
        assert calls[0][0] < calls[0][1] and calls[-1][0] == calls[-1][1]
        fetcher = agent.updates.updater().fetcher
        n_chunks = -(-calls[-1][1] // 16384)
        # resumed, not restarted: no chunk was fetched twice (from the broker or the chunk cache)
        assert fetcher.stats.chunks_fetched + fetcher.stats.chunks_from_cache - before == n_chunks, fetcher.stats
        assert agent.transport is not None and agent.transport.connects >= 2  # the agent saw the outage too
        assert agent.predict(X).version == "2.0.0"
    finally:
        agent.stop()


def test_every_window_arrives_in_order_after_an_outage(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    pub.publish("good1", "1.0.0")
    agent = start_agent(tmp_path, broker, pub, telemetry_interval=0.3)
    try:
        watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0 committed")
        watcher.wait_for(lambda: len(watcher.of("telemetry")) >= 2, what="telemetry before the outage")
        broker.stop()
        outage_start = time.time()
        served = 0
        while time.time() - outage_start < 1.5:  # five windows while the broker is down
            agent.predict(X)
            served += 1
            time.sleep(0.05)
        outage_end = time.time()
        assert len(agent.spool) >= 2
        broker.start()
        # every window closed during the outage must arrive, and the one still open (last + 1)
        # holds the rest of the outage's requests
        last = agent._last_seq + 1
        seqs = watcher.wait_for(
            lambda: (s := [t.seq for t in watcher.of("telemetry")]) and max(s) >= last and s,
            timeout=20,
            what="telemetry after reconnect",
        )
        first = seqs[0]
        unique = list(dict.fromkeys(seqs))
        assert unique == sorted(unique), "windows arrived out of order"
        assert set(range(first, max(unique) + 1)) <= set(unique), "a window was lost"
        tel = {t.seq: t for t in watcher.of("telemetry")}
        during = [t for t in tel.values() if t.window_end > outage_start and t.window_start < outage_end]
        assert len(during) >= 2
        assert sum(t.summary.requests for t in tel.values()) >= served
        assert all(t.dropped == 0 for t in tel.values())
    finally:
        agent.stop()


def test_model_failing_self_test_never_serves(tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher) -> None:
    pub.publish("good1", "1.0.0")
    agent = start_agent(tmp_path, broker, pub)
    versions: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            versions.add(agent.predict(X).version)

    try:
        watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0 committed")
        t = threading.Thread(target=traffic)
        t.start()
        pub.publish("good2", "2.0.0", corrupt_golden=True)
        ev = watcher.wait_for(lambda: [e for e in watcher.events() if e.event == "self_test_failed"], what="fail")[0]
        assert ev.version == "2.0.0" and "golden vector" in ev.reason and "tolerance" in ev.reason
        assert agent.status()["update_state"] == "rolled_back"
        stop.set()
        t.join()
        assert versions == {"1.0.0"}
        assert SlotStore(agent.cfg.slots_dir).info(SlotStore(agent.cfg.slots_dir).active or "").version == "1.0.0"
        # not retried in a loop
        time.sleep(0.5)
        assert len([e for e in watcher.events() if e.event == "start" and e.version == "2.0.0"]) == 1
    finally:
        stop.set()
        agent.stop()


def test_nan_in_probation_rolls_back_and_says_why(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    pub.publish("good1", "1.0.0")
    agent = start_agent(tmp_path, broker, pub, probation_seconds=30.0, probation_requests=20)
    try:
        watcher.wait_for(lambda: at(agent, "1.0.0", "probation"), what="1.0.0 in probation")
        for _ in range(20):  # 1.0.0 passes its probation on traffic
            agent.predict(X)
        watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0 committed")
        pub.publish("nan_when_negative", "2.0.0")
        watcher.wait_for(lambda: at(agent, "2.0.0", "probation"), what="2.0.0 in probation")
        bad = np.array([[-0.5, 0.1, 0.2, 0.3]], dtype=np.float32)
        answer = agent.predict(bad)  # the candidate fails: the previous model answers
        assert answer.version == "1.0.0" and np.isfinite(answer.outputs).all()
        ev = watcher.wait_for(lambda: [e for e in watcher.events() if e.event == "probation_failed"], what="rb")[0]
        assert ev.to_state == "rolled_back" and ev.version == "2.0.0" and "NaN" in ev.reason
        wait_until(lambda: at(agent, "1.0.0", "rolled_back"), what="serving 1.0.0 again")
        assert agent.predict(bad).version == "1.0.0"
        state = watcher.wait_for(lambda: [s for s in watcher.of("state") if s.update_state == "rolled_back"], what="s")
        assert "NaN" in (state[-1].last_error or "")
    finally:
        agent.stop()


def test_a_first_model_failing_probation_is_dropped_and_never_served_again(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    from device_agent.agent.core import NotReady, PredictError

    pub.publish("nan_when_negative", "1.0.0")  # the first model, so nothing to roll back to
    agent = start_agent(tmp_path, broker, pub, probation_seconds=30.0, probation_requests=20)
    bad = np.array([[-0.5, 0.1, 0.2, 0.3]], dtype=np.float32)
    try:
        watcher.wait_for(lambda: at(agent, "1.0.0", "probation"), what="1.0.0 in probation")
        with pytest.raises(PredictError):
            agent.predict(bad)
        ev = watcher.wait_for(lambda: [e for e in watcher.events() if e.event == "probation_failed"], what="rb")[0]
        assert "NaN" in ev.reason
        wait_until(lambda: agent.status()["update_state"] == "rolled_back", what="rolled back")
        with pytest.raises(NotReady):
            agent.predict(X)
        slots = SlotStore(agent.cfg.slots_dir)
        assert slots.active is None and slots.slots() == []
    finally:
        agent.stop()
    agent = start_agent(tmp_path, broker, pub, probation_seconds=30.0, probation_requests=20)
    try:
        time.sleep(1.0)  # a restart finds no slot to serve and keeps refusing the failed version
        with pytest.raises(NotReady):
            agent.predict(X)
        assert agent.status()["version"] is None
    finally:
        agent.stop()


def test_a_rejected_download_is_retried_after_the_repository_is_fixed(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    import json

    import paho.mqtt.publish as mqtt_publish
    import paho.mqtt.subscribe as mqtt_subscribe

    from device_agent.protocol import Topics

    pub.publish("good1", "1.0.0")
    opts = {"rejected_retry_s": 1.0, "update_check_interval": 0.5}
    agent = start_agent(tmp_path, broker, pub, **opts)
    watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0 committed")
    agent.stop()
    pub.publish("good2", "2.0.0")
    topics = Topics(pub.settings.fleet)
    index_msg = mqtt_subscribe.simple(topics.repo_target_index("models/tiny/2.0.0/tiny.tflite"),
                                      hostname=broker.host, port=broker.port, retained=True)
    digest = json.loads(index_msg.payload)["chunks"][0][0]
    good = mqtt_subscribe.simple(topics.repo_chunk(digest), hostname=broker.host, port=broker.port, retained=True)
    good_bytes = bytes(good.payload)
    mqtt_publish.single(topics.repo_chunk(digest), bytes([good_bytes[0] ^ 1]) + good_bytes[1:], qos=1,
                        retain=True, hostname=broker.host, port=broker.port)
    agent = start_agent(tmp_path, broker, pub, **opts)
    try:
        ev = watcher.wait_for(lambda: [e for e in watcher.events() if e.event == "rejected"], what="rejected")[0]
        assert ev.version == "2.0.0" and "download rejected" in ev.reason
        assert agent.predict(X).version == "1.0.0"  # the device keeps serving what it had
        mqtt_publish.single(topics.repo_chunk(digest), good_bytes, qos=1, retain=True,
                            hostname=broker.host, port=broker.port)
        watcher.wait_for(lambda: at(agent, "2.0.0", "probation") or at(agent, "2.0.0"), what="2.0.0 after retry")
        assert any(e.event == "retry" and e.version == "2.0.0" for e in watcher.events())
    finally:
        agent.stop()


def test_corrupted_slot_is_detected_and_recovered(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    pub.publish("good1", "1.0.0")
    pub.publish("good2", "2.0.0")
    agent = start_agent(tmp_path, broker, pub)
    watcher.wait_for(lambda: at(agent, "2.0.0"), what="2.0.0 committed")
    agent.stop()
    # give the agent a previous slot (1.0.0) by returning to it, then go forward again
    slots = SlotStore(agent.cfg.slots_dir)
    active = slots.info(slots.active or "")
    data = bytearray(active.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    active.model_path.write_bytes(bytes(data))
    agent = start_agent(tmp_path, broker, pub)
    try:
        ev = watcher.wait_for(lambda: [e for e in watcher.events() if e.event == "slot_rejected"], what="detect")[0]
        assert "corrupted" in ev.reason
        watcher.wait_for(lambda: at(agent, "2.0.0"), what="2.0.0 downloaded again")
        assert agent.predict(X).version == "2.0.0"
        assert SlotStore(agent.cfg.slots_dir).verify(SlotStore(agent.cfg.slots_dir).active or "").version == "2.0.0"
    finally:
        agent.stop()


def test_downgrade_refused_unless_back_to_previous_slot(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    for i, v in enumerate(("1.0.0", "2.0.0", "3.0.0")):
        pub.publish(f"good{i + 1}", v)
    agent = start_agent(tmp_path, broker, pub, model=None)
    try:
        watcher.set_desired("dev-t1", "2.0.0")
        watcher.wait_for(lambda: at(agent, "2.0.0"), what="2.0.0")
        watcher.set_desired("dev-t1", "3.0.0")
        watcher.wait_for(lambda: at(agent, "3.0.0"), what="3.0.0")
        watcher.set_desired("dev-t1", "1.0.0")
        ev = watcher.wait_for(lambda: [e for e in watcher.events() if e.event == "refused"], what="refused")[0]
        assert ev.version == "1.0.0" and "downgrade" in ev.reason
        assert agent.predict(X).version == "3.0.0"
        watcher.set_desired("dev-t1", "2.0.0")  # the fleet's rollback path: the previous slot
        watcher.wait_for(lambda: at(agent, "2.0.0"), what="back to 2.0.0")
        watcher.wait_for(
            lambda: [e.event for e in watcher.events() if e.version == "2.0.0"][-2:] == ["revert", "reverted"],
            what="revert events (no download, no probation)",
        )
    finally:
        agent.stop()


def test_shadow_runs_beside_the_active_model(tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher) -> None:
    pub.publish("good1", "1.0.0")
    pub.publish("good2", "2.0.0")
    agent = start_agent(tmp_path, broker, pub, model=None, telemetry_interval=0.3)
    try:
        watcher.set_desired("dev-t1", "1.0.0", shadow_version="2.0.0", shadow_fraction=1.0)
        watcher.wait_for(lambda: at(agent, "1.0.0") and agent.shadow is not None, what="shadow loaded")
        rng = np.random.default_rng(1)
        for _ in range(30):
            assert agent.predict(rng.uniform(0, 1, (1, 4)).astype(np.float32)).version == "1.0.0"
        tel = watcher.wait_for(lambda: [t for t in watcher.of("telemetry") if t.summary.shadow], what="shadow tel")
        total = sum((t.summary.shadow.requests for t in tel if t.summary.shadow), 0)
        assert total >= 1 and all(t.summary.shadow.version == "2.0.0" for t in tel if t.summary.shadow)
        assert all(0 <= (t.summary.shadow.agreement or 0) <= 1 for t in tel if t.summary.shadow)
    finally:
        agent.stop()


class Faulty:
    """A runtime_wrapper fault: slow or failing inference for one version (the simulator's hook)."""

    def __init__(self, inner: Any, kind: str) -> None:
        self.inner, self.kind, self.name = inner, kind, inner.name
        self.calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > 5:  # golden vectors pass; live traffic does not
            if self.kind == "error":
                raise RuntimeError("delegate crashed")
            time.sleep(0.08)
        return self.inner.run(x)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("kind", "why"), [("error", "error rate"), ("slow", "median latency")])
def test_errors_or_slowness_in_probation_roll_back(
    kind: str, why: str, tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    pub.publish("good1", "1.0.0")

    def wrapper(rt: Any, manifest: Any) -> Any:
        return Faulty(rt, kind) if manifest.version == "2.0.0" else rt

    cfg = agent_config(
        tmp_path,
        broker.url,
        model="tiny",
        trusted_root=pub.root,
        update_timeout=3.0,
        probation_requests=10,
        probation_seconds=30.0,
    )
    agent = Agent(cfg, runtime_wrapper=wrapper).start()
    try:
        wait_until(lambda: agent.status()["update_state"] == "probation", what="1.0.0 probation")
        for _ in range(10):
            agent.predict(X)
        watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0 committed")
        pub.publish("good2", "2.0.0")
        watcher.wait_for(lambda: at(agent, "2.0.0", "probation"), what="2.0.0 probation")
        answers = [agent.predict(X).version for _ in range(12)]
        assert set(answers) <= {"1.0.0", "2.0.0"}  # every request answered (fallback on errors)
        ev = watcher.wait_for(lambda: [e for e in watcher.events() if e.event == "probation_failed"], what="rb")[0]
        assert why in ev.reason and ev.version == "2.0.0"
        wait_until(lambda: at(agent, "1.0.0", "rolled_back"), what="back on 1.0.0")
    finally:
        agent.stop()


def test_no_request_fails_while_the_model_switches(
    tmp_path: Path, broker: Any, pub: Publisher, watcher: Watcher
) -> None:
    pub.publish("good1", "1.0.0")
    agent = start_agent(tmp_path, broker, pub)
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                seen.append(agent.predict(X).version)
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                failures.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    try:
        watcher.wait_for(lambda: at(agent, "1.0.0"), what="1.0.0")
        for t in threads:
            t.start()
        pub.publish("good2", "2.0.0")
        watcher.wait_for(lambda: at(agent, "2.0.0"), what="2.0.0")
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert "1.0.0" in seen and "2.0.0" in seen
        assert seen.index("2.0.0") > 0 and "1.0.0" not in seen[len(seen) - 100 :]
    finally:
        stop.set()
        agent.stop()


def test_starts_and_serves_without_a_broker_then_reports_once_it_is_up(
    tmp_path: Path, broker: Any, tiny_models: dict[str, Path], watcher: Watcher
) -> None:
    from tests.agent.modelkit import make_manifest, write_manifest

    manifest = write_manifest(tiny_models["good1"], make_manifest(tiny_models["good1"], version="1.0.0"))
    broker.stop()
    cfg = agent_config(
        tmp_path,
        broker.url,
        bootstrap_model=tiny_models["good1"],
        bootstrap_manifest=manifest,
        telemetry_interval=0.2,
        spool_max_windows=3,
    )
    agent = Agent(cfg).start()
    try:
        assert agent.predict(X).version == "1.0.0"  # serving does not wait for the network
        wait_until(lambda: agent.spool.dropped >= 2, what="spool full: oldest windows dropped")
        broker.start()
        tel = watcher.wait_for(lambda: [t for t in watcher.of("telemetry") if t.dropped >= 2], what="drop reported")
        seqs = [t.seq for t in watcher.of("telemetry")]
        assert seqs[0] >= tel[0].dropped  # the dropped windows are the oldest ones
        assert seqs == sorted(seqs)
        watcher.wait_for(lambda: [s for s in watcher.of("state") if s.online and s.version == "1.0.0"], what="state")
    finally:
        agent.stop()
