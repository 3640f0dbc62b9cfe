"""The rollout state machine and cohorts (pure: no broker, no store, the clock is an argument)."""

from __future__ import annotations

import pytest

from edgeml.errors import UsageError
from edgeml.fleet.gates import Gate, GateResult
from edgeml.fleet.rollout import (
    DeviceView,
    Rollout,
    apply_command,
    bucket,
    desired_version,
    new_rollout,
    parse_duration,
    parse_stages,
    parse_target,
    pick_previous,
    progress,
    step,
)

OK = [GateResult(Gate.parse("error_rate<=0.01"), 0.0, True)]
PENDING = [GateResult(Gate.parse("error_rate<=0.01"), None, None)]
BAD = [GateResult(Gate.parse("p95_latency_ratio<=1.2"), 3.1, False)]


def fleet(n: int, version: str = "1.0.0") -> list[DeviceView]:
    return [DeviceView(f"dev-{i:03d}", True, "digits", version) for i in range(n)]


def make(**kw) -> Rollout:  # type: ignore[no-untyped-def]
    opts = dict(stages="10,50,100", soak=30, min_devices=2, min_requests=10, now=1000.0, rollout_id="r1", confirm=0)
    opts.update(kw)
    return new_rollout("digits", "2.0.0", "1.0.0", **opts)  # type: ignore[arg-type]


def converge(r: Rollout, devices: list[DeviceView]) -> None:
    for d in devices:
        d.version = desired_version(r, d.device_id)[0]


def test_parsers() -> None:
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400 and parse_duration(0) == 0
    assert parse_stages("1,10,50,100") == [1, 10, 50, 100]
    assert parse_target("devices: a ,b") == "devices:a,b"
    for bad in ("10,5,100", "10,50", "0,100", "x"):
        with pytest.raises(UsageError):
            parse_stages(bad)
    for bad in ("-1s", "soon"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    with pytest.raises(UsageError):
        parse_target("group:")
    with pytest.raises(UsageError):
        new_rollout("digits", "1.0.0", "1.0.0", now=0)
    with pytest.raises(UsageError):
        new_rollout("digits", "2.0.0", None, shadow_first=True, now=0)


def test_buckets_are_deterministic_and_spread() -> None:
    assert bucket("r1", "dev-1") == bucket("r1", "dev-1")
    assert bucket("r1", "dev-1") != bucket("r2", "dev-1")
    values = [bucket("r1", f"dev-{i}") for i in range(1000)]
    assert 0.45 < sum(v < 0.5 for v in values) / 1000 < 0.55


def test_happy_path_through_every_stage() -> None:
    devices = fleet(40)
    r = make()
    s = step(r, devices, [], 1000.0)
    r = s.rollout
    assert s.stage_started and r.stage_index == 0
    first = {d.device_id for d in devices if r.in_cohort(d.device_id)}
    assert 2 <= len(first) <= 12
    # not converged yet: no advance even with healthy gates
    r = step(r, devices, OK, 1001.0).rollout
    assert r.healthy_since is None
    converge(r, devices)
    assert {d.device_id for d in devices if d.version == "2.0.0"} == first
    r = step(r, devices, OK, 1002.0).rollout
    assert r.healthy_since == 1002.0 and r.stage_index == 0
    r = step(r, devices, OK, 1020.0).rollout
    assert r.stage_index == 0  # soaking
    r = step(r, devices, OK, 1032.0).rollout
    assert r.stage_index == 1
    second = {d.device_id for d in devices if r.in_cohort(d.device_id)}
    assert first < second  # cohorts only grow
    for t in (1040.0, 1060.0):
        converge(r, devices)
        r = step(r, devices, OK, t).rollout
    assert r.stage_index == 1 and r.healthy_since == 1040.0
    r = step(r, devices, OK, 1071.0).rollout
    assert r.stage_index == 2 and r.cut == 1.0
    converge(r, devices)
    r = step(r, devices, OK, 1100.0).rollout
    s = step(r, devices, OK, 1131.0)
    assert s.completed and s.rollout.state == "completed"
    assert all(desired_version(s.rollout, d.device_id) == ("2.0.0", None) for d in devices)
    events = [h["event"] for h in s.rollout.history]
    assert events.count("stage_started") == 3 and events[-1] == "completed"


def test_failed_gate_halts_and_rolls_back_only_the_cohort_ever_saw_it() -> None:
    devices = fleet(30)
    r = step(make(), devices, [], 1000.0).rollout
    converge(r, devices)
    cohort = {d.device_id for d in devices if d.version == "2.0.0"}
    s = step(r, devices, BAD, 1005.0)
    assert s.halted and s.rollout.state == "halted"
    assert "p95_latency_ratio=3.1" in s.rollout.reason and "stage 1" in s.rollout.reason
    assert all(desired_version(s.rollout, d.device_id) == ("1.0.0", None) for d in devices)
    assert len(cohort) < len(devices)
    # a halted rollout makes no further decisions
    assert not step(s.rollout, devices, OK, 2000.0).changed


def test_pending_gates_reset_the_soak_and_paused_holds() -> None:
    devices = fleet(10)
    r = step(make(min_devices=10), devices, [], 1000.0).rollout
    converge(r, devices)
    r = step(r, devices, OK, 1001.0).rollout
    r = step(r, devices, PENDING, 1010.0).rollout
    assert r.healthy_since is None
    r = apply_command(r, "pause", 1011.0).rollout
    r = step(r, devices, OK, 1100.0).rollout
    assert r.state == "paused" and r.stage_index == 0
    # a failure while paused still halts
    assert step(r, devices, BAD, 1101.0).halted
    r = apply_command(r, "resume", 1102.0).rollout
    assert r.state == "running"
    with pytest.raises(UsageError):
        apply_command(r, "resume", 1103.0)


def test_offline_devices_do_not_block_and_min_devices_raises_the_cut() -> None:
    devices = fleet(20)
    r = step(make(stages="1,100", min_devices=3), devices, [], 1000.0).rollout
    p = progress(r, devices)
    assert len(p.cohort) == 3  # 1 % of 20 devices is raised to the minimum of 3
    devices_by_id = {d.device_id: d for d in devices}
    devices_by_id[p.cohort[0]].online = False
    for dev_id in p.cohort[1:]:
        devices_by_id[dev_id].version = "2.0.0"
    assert progress(r, devices).converged


def test_promote_and_abort() -> None:
    devices = fleet(10)
    r = step(make(), devices, [], 1000.0).rollout
    r = apply_command(r, "promote", 1001.0, devices).rollout
    assert r.stage_index == 1
    r = apply_command(r, "abort", 1002.0).rollout
    assert r.state == "aborted"
    assert desired_version(r, "dev-001") == ("1.0.0", None)
    with pytest.raises(UsageError):
        apply_command(r, "pause", 1003.0)


def test_shadow_first_runs_candidate_beside_previous() -> None:
    devices = fleet(10)
    r = step(make(shadow_first=True, stages="50,100"), devices, [], 1000.0).rollout
    assert r.stage_mode == "shadow"
    inside = next(d.device_id for d in devices if r.in_cohort(d.device_id))
    assert desired_version(r, inside) == ("1.0.0", "2.0.0")


def test_record_round_trips_and_previous_is_the_majority() -> None:
    r = step(make(), fleet(5), [], 1000.0).rollout
    assert Rollout.from_dict(r.to_dict()) == r
    devices = fleet(3, "1.0.0") + [DeviceView("x", True, "digits", "0.9.0"), DeviceView("y", True, "other", "5")]
    assert pick_previous("digits", "all", devices) == "1.0.0"
    assert pick_previous("digits", "devices:x", devices) == "0.9.0"


def test_a_measured_violation_must_persist_but_failures_halt_at_once() -> None:
    devices = fleet(10)
    r = step(make(confirm=5), devices, [], 1000.0).rollout
    converge(r, devices)
    s = step(r, devices, BAD, 1001.0)
    assert not s.halted and s.rollout.failing_since == 1001.0
    s = step(s.rollout, devices, OK, 1002.0)  # recovered: the clock restarts
    assert s.rollout.failing_since is None
    r = step(s.rollout, devices, BAD, 1003.0).rollout
    assert not step(r, devices, BAD, 1007.0).halted
    assert step(r, devices, BAD, 1008.5).halted
    failure = [GateResult(Gate.parse("update_failures<=0"), 1.0, False)]
    assert step(s.rollout, devices, failure, 1002.5).halted


def test_targets_and_joiners_get_what_their_bucket_says() -> None:
    from edgeml.fleet.rollout import in_target

    a = DeviceView("a", True, "digits", "1.0.0", group="north")
    b = DeviceView("b", True, "digits", "1.0.0", group="south")
    fresh = DeviceView("c", True, None, None)
    other = DeviceView("d", True, "faces", "3.0.0")
    assert [in_target("all", "digits", d) for d in (a, b, fresh, other)] == [True, True, True, False]
    assert [in_target("group:north", "digits", d) for d in (a, b, fresh)] == [True, False, False]
    assert [in_target("devices:b,d", "digits", d) for d in (a, b, other)] == [False, True, True]
    devices = fleet(20)
    r = step(make(stages="30,100"), devices, [], 1000.0).rollout
    joiners = [f"late-{i}" for i in range(200)]
    got = {j: desired_version(r, j)[0] for j in joiners}
    inside = {j for j in joiners if bucket(r.id, j) <= r.cut}
    assert {j for j, v in got.items() if v == "2.0.0"} == inside
    assert 0.15 < len(inside) / len(joiners) < 0.5


def test_ab_holds_the_first_split_until_promoted() -> None:
    devices = fleet(10)
    r = step(make(hold=True, soak=0), devices, [], 1000.0).rollout
    converge(r, devices)
    r = step(r, devices, OK, 1001.0).rollout
    assert r.state == "paused" and r.stage_index == 0 and r.history[-1]["event"] == "held"
    r = apply_command(r, "promote", 1002.0, devices).rollout
    assert r.stage_index == 1
    r = apply_command(r, "resume", 1003.0).rollout
    assert r.state == "running"


@pytest.mark.parametrize("rollout_id", ["r1", "r2", "r3", "r4", "r5"])
def test_each_stage_holds_the_share_it_names(rollout_id: str) -> None:
    from edgeml.fleet.rollout import stage_cut

    devices = fleet(20)
    r = make(rollout_id=rollout_id, min_devices=1)
    cuts = []
    for pct, want in ((10, 2), (25, 5), (50, 10), (100, 20)):
        r.cuts = [*r.cuts, stage_cut(r, pct, devices)]
        cuts.append(r.cut)
        assert sum(r.in_cohort(d.device_id) for d in devices) == want, (pct, rollout_id)
    assert cuts == sorted(cuts)  # cuts only grow: a device that got the candidate keeps it
    # min_devices raises a small stage
    r2 = make(rollout_id=rollout_id, min_devices=3)
    r2.cuts = [stage_cut(r2, 1, devices)]
    assert sum(r2.in_cohort(d.device_id) for d in devices) == 3
