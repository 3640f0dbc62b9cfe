"""The update driver's decisions with an in-memory updater (unit tests of the state machine's
carrying-out: rejection, retries, aborts, the restart loop guard). Real LiteRT, real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.agent import Agent
from device_agent.agent import statemachine as sm
from tests.agent.conftest import agent_config
from tests.agent.fakes import FakeUpdater
from tests.agent.harness import wait_until
from tests.agent.modelkit import make_manifest

X = np.array([[0.2, 0.4, 0.6, 0.8]], dtype=np.float32)


@pytest.fixture
def fake(tiny_models: dict[str, Path]) -> FakeUpdater:
    up = FakeUpdater()
    up.add(tiny_models["good1"], make_manifest(tiny_models["good1"], version="1.0.0"))
    return up


def make_agent(tmp_path: Path, shared_broker: Any, fake: FakeUpdater, **kw: Any) -> Agent:
    kw.setdefault("model", "tiny")
    cfg = agent_config(tmp_path, shared_broker.url, device_id=f"dev-{tmp_path.name[-20:]}", **kw)
    return Agent(cfg, updater_factory=lambda a: fake)


def settled(agent: Agent, version: str, state: str = "committed") -> bool:
    st = agent.status()
    return st["version"] == version and st["update_state"] == state


def test_tampered_download_fails_and_is_not_retried(
    tmp_path: Path, shared_broker: Any, fake: FakeUpdater, tiny_models: dict[str, Path]
) -> None:
    agent = make_agent(tmp_path, shared_broker, fake).start()
    try:
        wait_until(lambda: settled(agent, "1.0.0"), what="1.0.0")
        rel = fake.add(tiny_models["good2"], make_manifest(tiny_models["good2"], version="2.0.0"))
        fake.tamper.add(rel.target_path)
        agent.kick()
        wait_until(lambda: agent.record.state == sm.FAILED, what="failed")
        assert "hash mismatch" in agent.record.reason and "tiny@2.0.0" in agent.record.refused
        n = fake.downloads
        agent.kick()
        wait_until(lambda: agent.record.last_event == sm.REJECTED, what="still rejected")
        assert fake.downloads == n and agent.predict(X).version == "1.0.0"
    finally:
        agent.stop()


def test_every_new_update_starts_with_an_empty_chunk_cache(
    tmp_path: Path, shared_broker: Any, fake: FakeUpdater, tiny_models: dict[str, Path]
) -> None:
    agent = make_agent(tmp_path, shared_broker, fake).start()
    try:
        wait_until(lambda: settled(agent, "1.0.0"), what="1.0.0")
        assert fake.cache_clears == 1
        fake.add(tiny_models["good2"], make_manifest(tiny_models["good2"], version="2.0.0"))
        agent.kick()
        wait_until(lambda: settled(agent, "2.0.0"), what="2.0.0")
        assert fake.cache_clears == 2  # chunks an abandoned or rejected download left cannot pile up
    finally:
        agent.stop()


def test_transport_errors_are_retried_until_the_download_completes(
    tmp_path: Path, shared_broker: Any, fake: FakeUpdater, tiny_models: dict[str, Path]
) -> None:
    fake.transport_failures = 2
    agent = make_agent(tmp_path, shared_broker, fake).start()
    try:
        wait_until(lambda: settled(agent, "1.0.0"), timeout=30, what="1.0.0 after two transport errors")
        assert fake.downloads == 3
    finally:
        agent.stop()


def test_desired_change_mid_update_aborts(tmp_path: Path, shared_broker: Any, fake: FakeUpdater) -> None:
    from device_agent.protocol.messages import DesiredState

    agent = make_agent(tmp_path, shared_broker, fake, model=None)
    agent.record = sm.UpdateRecord(state=sm.DOWNLOADING, target=sm.Target("tiny", "9.0.0"))
    agent.desired = DesiredState(model="tiny", version="1.0.0")
    agent.updates.step_once()
    assert agent.record.state == sm.IDLE and agent.record.last_event == sm.ABORT
    agent.updates.drive()
    wait_until(lambda: agent.record.state == sm.PROBATION, what="the new target")
    assert agent.active is not None and agent.active.version == "1.0.0"


def test_restarts_during_probation_hit_the_loop_guard_and_roll_back(
    tmp_path: Path, shared_broker: Any, fake: FakeUpdater, tiny_models: dict[str, Path]
) -> None:
    agent = make_agent(tmp_path, shared_broker, fake, probation_seconds=0.2).start()
    wait_until(lambda: settled(agent, "1.0.0"), what="1.0.0")
    agent.stop()
    fake.add(tiny_models["good2"], make_manifest(tiny_models["good2"], version="2.0.0"))
    agent = make_agent(tmp_path, shared_broker, fake, probation_seconds=60).start()
    wait_until(lambda: settled(agent, "2.0.0", "probation"), what="2.0.0 in probation")
    agent.stop()
    for attempt in (1, 2, 3):  # the agent keeps dying in probation (e.g. the new model crashes it)
        agent = make_agent(tmp_path, shared_broker, fake, probation_seconds=60).start()
        assert agent.record.state == sm.PROBATION and agent.record.attempts == attempt
        assert agent.predict(X).version == "2.0.0"
        agent.stop()
    agent = make_agent(tmp_path, shared_broker, fake, probation_seconds=60).start()
    try:
        assert agent.record.state == sm.ROLLED_BACK
        assert "loop guard" in agent.record.reason and "restarted 4 times" in agent.record.reason
        assert agent.predict(X).version == "1.0.0"
        assert "tiny@2.0.0" in agent.record.refused
    finally:
        agent.stop()


def test_a_refused_version_is_retried_only_when_the_controller_asks_again(
    tmp_path: Path, shared_broker: Any, fake: FakeUpdater, tiny_models: dict[str, Path]
) -> None:
    from device_agent.protocol.messages import DesiredState

    rel = fake.add(tiny_models["good2"], make_manifest(tiny_models["good2"], version="2.0.0"))
    fake.tamper.add(rel.target_path)
    agent = make_agent(tmp_path, shared_broker, fake, model=None).start()

    def desire(version: str) -> None:
        agent._on_desired("t", DesiredState(model="tiny", version=version).to_json())

    try:
        desire("1.0.0")
        wait_until(lambda: settled(agent, "1.0.0"), what="1.0.0")
        desire("2.0.0")
        wait_until(lambda: agent.record.state == sm.FAILED, what="2.0.0 refused")
        n = fake.downloads
        agent.kick()
        wait_until(lambda: agent.updates._desired_key == "tiny@2.0.0", what="considered again")
        assert fake.downloads == n  # the same desired state does not loop
        fake.tamper.clear()
        desire("1.0.0")  # the controller moves away ...
        wait_until(lambda: "tiny@2.0.0" not in agent.record.refused, what="refusal forgotten")
        desire("2.0.0")  # ... and asks again: a deliberate retry
        wait_until(lambda: settled(agent, "2.0.0"), what="2.0.0 after the retry")
    finally:
        agent.stop()


def test_lost_pointer_and_unreadable_state_still_serve_a_verified_slot(
    tmp_path: Path, shared_broker: Any, fake: FakeUpdater
) -> None:
    agent = make_agent(tmp_path, shared_broker, fake).start()
    wait_until(lambda: settled(agent, "1.0.0"), what="1.0.0")
    agent.stop()
    (agent.cfg.slots_dir / "pointer.json").write_text("{torn")
    agent.cfg.state_path.write_text("\x00\x00garbage")
    agent = make_agent(tmp_path, shared_broker, fake)
    agent.start()
    try:
        assert agent.predict(X).version == "1.0.0"
        assert agent.record.state in (sm.IDLE, sm.COMMITTED)
        assert agent.slots.active is not None and agent.slots.verify(agent.slots.active).version == "1.0.0"
    finally:
        agent.stop()
