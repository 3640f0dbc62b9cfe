"""The rollout state machine, pure: a rollout record, the devices' reported state and the gate
verdicts go in; the next record and the actions to take come out. No I/O and no clock of its own
(``now`` is an argument), so every decision is a unit test and the controller can be killed and
restarted at any point: the record lives in the store and the same inputs give the same result.

States: ``running`` → (stage advances) → ``completed``; ``running``/``paused`` → ``halted`` when a
gate fails (the cohort goes back to the previous version); any live state → ``aborted`` by the
operator (everyone goes back). ``paused`` holds the current stage; gates are still judged.

Cohorts are deterministic: a device's bucket is a hash of the rollout id and the device id in
[0, 1). Stage *i* reaches every device whose bucket is at or below the stage's *cut*; cuts only
grow, so a device that got the candidate keeps it until the rollout ends, and a device joining
later gets what its bucket dictates. A cut is set when its stage starts so that the cohort holds
the stage's share of the devices known then (at least ``min_devices``).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

from device_agent.protocol.topics import check_segment
from device_agent.protocol.versions import version_key
from edgeml.errors import UsageError
from edgeml.fleet.gates import GateResult, describe_failure, parse_gates, verdict

RUNNING, PAUSED, HALTED, COMPLETED, ABORTED = "running", "paused", "halted", "completed", "aborted"
STATES = (RUNNING, PAUSED, HALTED, COMPLETED, ABORTED)
ACTIVE = (RUNNING, PAUSED)
COMMANDS = ("pause", "resume", "abort", "promote")
# update states in which a device is still working on a change
BUSY_UPDATE_STATES = ("downloading", "verifying", "staged", "activating", "probation")


def parse_duration(text: str | float | int) -> float:
    """``"10m"`` -> 600.0; accepts s, m, h, d suffixes or plain seconds. Raises UsageError."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = str(text).strip().lower()
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(raw[-1:] if raw else "")
        try:
            value = float(raw[:-1]) * scale if scale else float(raw)
        except ValueError as exc:
            raise UsageError(f"duration {text!r} is not understood", hint="use e.g. 30s, 10m, 1h or seconds") from exc
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"duration {text!r} must be a non-negative number of seconds")
    return value


def parse_stages(text: str | Sequence[float]) -> list[float]:
    """``"1,10,50,100"`` -> [1.0, 10.0, 50.0, 100.0]. Must increase and end at 100. Raises UsageError."""
    try:
        values = [float(p) for p in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise UsageError(f"stages {text!r} must be comma-separated percentages", hint="e.g. 1,10,50,100") from exc
    if not values or any(not 0 < v <= 100 for v in values):
        raise UsageError(f"stages {text!r}: every stage must be a percentage in (0, 100]", hint="e.g. 1,10,50,100")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise UsageError(f"stages {text!r} must increase", hint="e.g. 1,10,50,100")
    if values[-1] != 100:
        raise UsageError(f"stages {text!r} must end at 100", hint="append ,100 (a rollout ends on every device)")
    return values


def parse_target(text: str) -> str:
    """Validate ``all``, ``group:G`` or ``devices:a,b``. Raises UsageError."""
    text = (text or "all").strip()
    if text == "all":
        return text
    kind, _, rest = text.partition(":")
    if kind == "group" and rest:
        check_segment(rest, "group")
        return text
    if kind == "devices" and rest:
        for d in rest.split(","):
            check_segment(d.strip(), "device id")
        return "devices:" + ",".join(d.strip() for d in rest.split(","))
    raise UsageError(f"target {text!r} is not understood", hint="use all, group:NAME or devices:ID1,ID2")


def bucket(rollout_id: str, device_id: str) -> float:
    """The device's deterministic place in [0, 1) for this rollout."""
    digest = hashlib.sha256(f"{rollout_id}/{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass
class DeviceView:
    """What the engine knows of one device (from its retained state)."""

    device_id: str
    online: bool = True
    model: Optional[str] = None
    version: Optional[str] = None
    previous_version: Optional[str] = None
    update_state: str = "idle"
    group: Optional[str] = None


def in_target(target: str, model: str, device: DeviceView) -> bool:
    """Whether a rollout targeting ``target`` of ``model`` concerns ``device``."""
    if target.startswith("devices:"):
        return device.device_id in target[len("devices:"):].split(",")
    if device.model not in (None, "", model):
        return False  # devices running another model are another fleet's business
    if target.startswith("group:"):
        return device.group == target[len("group:"):]
    return True


@dataclass
class Rollout:
    """A rollout record: everything needed to continue after a restart."""

    id: str
    model: str
    version: str
    previous_version: Optional[str] = None
    target: str = "all"
    stages: list[float] = field(default_factory=lambda: [1.0, 10.0, 50.0, 100.0])
    shadow_first: bool = False
    shadow_fraction: float = 0.2
    soak_s: float = 600.0
    min_devices: int = 1
    min_requests: int = 100
    gates: list[str] = field(default_factory=list)
    state: str = RUNNING
    stage_index: int = 0
    stage_started_at: Optional[float] = None
    cuts: list[float] = field(default_factory=list)
    healthy_since: Optional[float] = None
    confirm_s: float = 5.0
    failing_since: Optional[float] = None
    hold: bool = False
    reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    last_gates: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: Optional[float] = None

    # plan ------------------------------------------------------------------------------------
    @property
    def plan(self) -> list[tuple[float, str]]:
        """(percentage, mode) per stage; mode ``shadow`` runs the candidate beside the active model."""
        head = [(self.stages[0], "shadow")] if self.shadow_first else []
        return head + [(p, "serve") for p in self.stages]

    @property
    def stage_mode(self) -> str:
        return self.plan[min(self.stage_index, len(self.plan) - 1)][1]

    @property
    def stage_pct(self) -> float:
        return self.plan[min(self.stage_index, len(self.plan) - 1)][0]

    @property
    def cut(self) -> float:
        return self.cuts[-1] if self.cuts else 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def in_cohort(self, device_id: str) -> bool:
        return bool(self.cuts) and bucket(self.id, device_id) <= self.cut

    def ever_in_serve_cohort(self, device_id: str) -> bool:
        """Whether this device was ever asked to serve the candidate (for rollback targeting)."""
        plan = self.plan
        cuts = [c for c, (_, mode) in zip(self.cuts, plan) if mode == "serve"]
        return bool(cuts) and bucket(self.id, device_id) <= max(cuts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_rollout(
    model: str,
    version: str,
    previous_version: str | None,
    *,
    target: str = "all",
    stages: str | Sequence[float] = "1,10,50,100",
    soak: str | float = "10m",
    min_devices: int = 1,
    min_requests: int = 100,
    gates: Sequence[str] | None = None,
    shadow_first: bool = False,
    shadow_fraction: float = 0.2,
    confirm: str | float = 5.0,
    hold: bool = False,
    now: float,
    rollout_id: str | None = None,
) -> Rollout:
    """Validate the options and build a fresh running rollout. Raises UsageError on bad options."""
    check_segment(model, "model name")
    version_key(version)
    if previous_version == version:
        raise UsageError(
            f"{model} {version} is already what the fleet runs",
            hint="publish a new version, or target devices that run something else",
        )
    if min_devices < 1:
        raise UsageError("--min-devices must be at least 1")
    if min_requests < 0:
        raise UsageError("--min-requests must be 0 or more")
    if not 0 < shadow_fraction <= 1:
        raise UsageError("shadow fraction must be in (0, 1]")
    if shadow_first and not previous_version:
        raise UsageError(
            f"--shadow-first needs a version to run beside, but no targeted device runs {model} yet",
            hint="roll out a first version without --shadow-first",
        )
    parsed = parse_gates(gates, shadow_first)
    rid = rollout_id or f"{model}-{version}-{uuid.uuid4().hex[:6]}"
    r = Rollout(
        id=rid,
        model=model,
        version=version,
        previous_version=previous_version,
        target=parse_target(target),
        stages=parse_stages(stages),
        shadow_first=shadow_first,
        shadow_fraction=shadow_fraction,
        soak_s=parse_duration(soak),
        confirm_s=parse_duration(confirm),
        hold=hold,
        min_devices=min_devices,
        min_requests=min_requests,
        gates=[str(g) for g in parsed],
        created_at=now,
        updated_at=now,
    )
    r.history.append({"t": now, "event": "created", "detail": f"{model} {previous_version or '-'} -> {version}"})
    return r


def stage_cut(rollout: Rollout, pct: float, devices: Iterable[DeviceView]) -> float:
    """The cut for a stage at ``pct`` percent: the bucket of the device that makes the cohort
    ``pct`` percent of ``devices`` (rounded up, at least ``min_devices``), so that a small fleet's
    stage holds the share it names rather than whatever a hash gives; the plain percentage when no
    device is known yet; never below the previous cut; 100 % is everyone."""
    if pct >= 100:
        return 1.0
    buckets = sorted(bucket(rollout.id, d.device_id) for d in devices)
    if not buckets:
        return max(pct / 100.0, rollout.cut)
    k = min(max(rollout.min_devices, math.ceil(pct / 100.0 * len(buckets))), len(buckets))
    return max(buckets[k - 1], rollout.cut)


def desired_version(rollout: Rollout, device_id: str) -> tuple[str | None, str | None]:
    """(active version, shadow version) this rollout asks of a targeted device; (None, None) when
    it asks nothing (no previous version to return to)."""
    if rollout.state == COMPLETED:
        return rollout.version, None
    if rollout.state in (HALTED, ABORTED):
        return rollout.previous_version, None
    if rollout.in_cohort(device_id):
        if rollout.stage_mode == "shadow":
            return rollout.previous_version, rollout.version
        return rollout.version, None
    if rollout.ever_in_serve_cohort(device_id):
        return rollout.version, None
    return rollout.previous_version, None


@dataclass
class Progress:
    """The cohort's convergence at the current stage."""

    cohort: list[str]
    at_version: list[str]
    online_pending: list[str]

    @property
    def converged(self) -> bool:
        return bool(self.at_version) and not self.online_pending


def progress(rollout: Rollout, devices: Sequence[DeviceView]) -> Progress:
    """Which targeted devices are in the cohort, which run what they should, which online ones do not yet."""
    expect = rollout.previous_version if rollout.stage_mode == "shadow" else rollout.version
    cohort, at, pending = [], [], []
    for d in devices:
        if not in_target(rollout.target, rollout.model, d) or not rollout.in_cohort(d.device_id):
            continue
        cohort.append(d.device_id)
        if d.version == expect and d.update_state not in BUSY_UPDATE_STATES:
            at.append(d.device_id)
        elif d.online:
            pending.append(d.device_id)
    return Progress(cohort, at, pending)


@dataclass
class Step:
    """The result of one engine step: the new record and what happened."""

    rollout: Rollout
    changed: bool = False
    halted: bool = False
    completed: bool = False
    stage_started: bool = False
    messages: list[str] = field(default_factory=list)


def _note(r: Rollout, now: float, event: str, detail: str = "", **extra: Any) -> None:
    r.history.append({"t": now, "event": event, "detail": detail, **extra})


def _start_stage(r: Rollout, index: int, devices: Sequence[DeviceView], now: float) -> None:
    pct, mode = r.plan[index]
    targeted = [d for d in devices if in_target(r.target, r.model, d)]
    r.stage_index = index
    r.cuts = [*r.cuts, stage_cut(r, pct, targeted)]
    r.stage_started_at = now
    r.healthy_since = None
    _note(r, now, "stage_started", f"stage {index + 1}/{len(r.plan)}: {pct:g}% ({mode})", stage=index, pct=pct)


def apply_command(rollout: Rollout, command: str, now: float, devices: Sequence[DeviceView] = ()) -> Step:
    """Apply an operator command. Raises UsageError when it does not apply in the current state."""
    r = replace(rollout, history=list(rollout.history), cuts=list(rollout.cuts))
    if command not in COMMANDS:
        raise UsageError(f"unknown rollout command {command!r}", hint=f"use one of {', '.join(COMMANDS)}")
    if command == "pause":
        if r.state != RUNNING:
            raise UsageError(f"rollout {r.id} is {r.state}; only a running rollout can be paused")
        r.state = PAUSED
    elif command == "resume":
        if r.state != PAUSED:
            raise UsageError(f"rollout {r.id} is {r.state}; only a paused rollout can be resumed")
        r.state, r.healthy_since = RUNNING, None
    elif command == "abort":
        if r.state not in (RUNNING, PAUSED, HALTED):
            raise UsageError(f"rollout {r.id} is {r.state}; it cannot be aborted")
        r.state, r.reason, r.finished_at = ABORTED, "aborted by the operator", now
    elif command == "promote":
        if r.state not in ACTIVE:
            raise UsageError(f"rollout {r.id} is {r.state}; only a running or paused rollout can be promoted")
        if r.stage_index + 1 >= len(r.plan):
            r.state, r.finished_at, r.reason = COMPLETED, now, "promoted by the operator"
        else:
            _start_stage(r, r.stage_index + 1, devices, now)
    _note(r, now, command, "by the operator")
    r.updated_at = now
    return Step(r, changed=True, completed=r.state == COMPLETED)


def step(rollout: Rollout, devices: Sequence[DeviceView], results: Sequence[GateResult], now: float) -> Step:
    """One decision: start the first stage, halt on a failed gate, advance a healthy soaked stage,
    complete after the last. ``results`` are the gates judged on the current stage's data."""
    r = replace(rollout, history=list(rollout.history), cuts=list(rollout.cuts))
    out = Step(r)
    if r.state not in ACTIVE:
        return out
    if r.stage_started_at is None:
        _start_stage(r, 0, devices, now)
        out.changed = out.stage_started = True
        r.updated_at = now
        return out
    r.last_gates = [g.to_dict() for g in results]
    v = verdict(results)
    if v is False:
        # a device that gave up on the version halts at once; a measured value must stay over its
        # limit for ``confirm_s`` (one unlucky tail on a small sample is not a verdict)
        hard = any(g.ok is False and g.gate.metric == "update_failures" for g in results)
        if r.failing_since is None:
            r.failing_since = now
            out.changed = True
        if not hard and now - r.failing_since < r.confirm_s:
            r.healthy_since = None
            r.updated_at = now
            return out
    elif r.failing_since is not None:
        r.failing_since = None
        out.changed = True
    if v is False:
        r.state, r.finished_at = HALTED, now
        r.reason = f"stage {r.stage_index + 1} ({r.stage_pct:g}%): " + describe_failure(results)
        _note(r, now, "halted", r.reason, gates=r.last_gates)
        out.changed = out.halted = True
        out.messages.append(r.reason)
        r.updated_at = now
        return out
    if r.state == PAUSED:
        return out
    prog = progress(r, devices)
    if v is True and prog.converged:
        if r.healthy_since is None:
            r.healthy_since = now
            out.changed = True
        if r.hold and r.stage_index == 0 and now - r.healthy_since >= r.soak_s:
            # A/B: hold the split; `rollout resume` continues when the comparison is done
            r.state, r.hold = PAUSED, False
            _note(r, now, "held", f"stage 1 held at {r.stage_pct:g}% for an A/B comparison", gates=r.last_gates)
            out.changed = True
        elif now - r.healthy_since >= r.soak_s:
            _note(r, now, "stage_passed", f"stage {r.stage_index + 1} passed", gates=r.last_gates)
            if r.stage_index + 1 >= len(r.plan):
                r.state, r.finished_at, r.reason = COMPLETED, now, "every stage passed"
                _note(r, now, "completed", r.reason)
                out.completed = True
            else:
                _start_stage(r, r.stage_index + 1, devices, now)
                out.stage_started = True
            out.changed = True
    elif r.healthy_since is not None:
        r.healthy_since = None
        out.changed = True
    if out.changed:
        r.updated_at = now
    return out


def pick_previous(model: str, target: str, devices: Sequence[DeviceView]) -> str | None:
    """The version most targeted devices run now (ties: the newest): what a rollback returns to."""
    counts: dict[str, int] = {}
    for d in devices:
        if d.model == model and d.version and in_target(target, model, d):
            counts[d.version] = counts.get(d.version, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda v: (counts[v], version_key(v)))
