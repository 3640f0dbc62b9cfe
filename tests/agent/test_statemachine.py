"""The update state machine table, its persistence and loop guard (pure, fast)."""

from __future__ import annotations

import json

import pytest

from device_agent.agent import statemachine as sm
from device_agent.errors import DataError


def test_happy_path_walks_the_documented_flow() -> None:
    rec = sm.UpdateRecord(target=sm.Target("m", "2"))
    seen = [rec.state]
    for ev in (sm.START, sm.DOWNLOADED, sm.VERIFIED, sm.ACTIVATE, sm.SELF_TEST_PASSED, sm.PROBATION_PASSED):
        rec = sm.step(rec, ev, now=1.0)
        seen.append(rec.state)
    assert seen == ["idle", "downloading", "verifying", "staged", "activating", "probation", "committed"]
    assert rec.transitions == 5 and rec.refused == {}


@pytest.mark.parametrize("state", [sm.ACTIVATING, sm.PROBATION])
def test_rolled_back_reachable_from_activating_and_probation_and_refuses_the_version(state: str) -> None:
    event = sm.SELF_TEST_FAILED if state == sm.ACTIVATING else sm.PROBATION_FAILED
    rec = sm.step(sm.UpdateRecord(state=state, target=sm.Target("m", "3")), event, "nan outputs")
    assert rec.state == sm.ROLLED_BACK
    assert rec.refused == {"m@3": "nan outputs"}


def test_out_of_order_events_are_refused() -> None:
    with pytest.raises(sm.TransitionError, match="not allowed"):
        sm.step(sm.UpdateRecord(state=sm.IDLE), sm.ACTIVATE)
    with pytest.raises(sm.TransitionError):
        sm.step(sm.UpdateRecord(state=sm.DOWNLOADING), sm.PROBATION_PASSED)
    with pytest.raises(sm.TransitionError):
        sm.step(sm.UpdateRecord(state=sm.STAGED), sm.SELF_TEST_PASSED)


def test_every_state_has_a_resume_rule_and_every_in_progress_state_can_end() -> None:
    assert set(sm.RESUME) == set(sm.STATES)
    for state in sm.IN_PROGRESS:
        assert sm.next_state(state, sm.LOOP_GUARD) == sm.FAILED
        assert sm.next_state(state, sm.RETRY) == state
    for state in sm.RESTING:
        assert sm.next_state(state, sm.START) == sm.DOWNLOADING
        assert sm.next_state(state, sm.REVERT) == sm.ACTIVATING
    # every target of the table is a known state
    assert {to for to in sm.TRANSITIONS.values() if to} <= set(sm.STATES)


def test_loop_guard_fails_an_update_that_keeps_retrying() -> None:
    rec = sm.step(sm.UpdateRecord(target=sm.Target("m", "2")), sm.START)
    for _ in range(sm.MAX_TRANSITIONS - 1):
        rec = sm.step(rec, sm.RETRY)
        assert rec.state == sm.DOWNLOADING
    rec = sm.step(rec, sm.RETRY)
    assert rec.state == sm.DOWNLOADING
    rec = sm.step(rec, sm.RETRY)
    assert rec.state == sm.FAILED and rec.last_event == sm.LOOP_GUARD
    assert "loop guard" in rec.reason and "m@2" in rec.refused


def test_start_resets_counters_and_step_does_not_mutate_input() -> None:
    rec = sm.UpdateRecord(state=sm.COMMITTED, attempts=3, transitions=9, target=sm.Target("m", "1"))
    new = sm.step(rec, sm.START)
    assert (new.attempts, new.transitions) == (0, 0)
    assert rec.state == sm.COMMITTED and rec.transitions == 9


def test_record_round_trips_through_json_and_rejects_other_versions() -> None:
    rec = sm.UpdateRecord(
        state=sm.STAGED,
        target=sm.Target("m", "2", "models/m/2/m.tflite", 10, {"name": "m"}),
        candidate_slot="m-2-abc",
        attempts=1,
        refused={"m@1": "bad"},
        mode="update",
    )
    back = sm.UpdateRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back == rec
    with pytest.raises(DataError, match="version"):
        sm.UpdateRecord.from_dict({**rec.to_dict(), "version": 99})
    with pytest.raises(DataError, match="not a known state"):
        sm.UpdateRecord.from_dict({**rec.to_dict(), "state": "exploding"})
