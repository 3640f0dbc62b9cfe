"""The rollout engine: the adapter around the pure state machine in :mod:`edgeml.fleet.rollout`.

Each :meth:`Engine.tick` applies queued operator commands, reads the devices and the telemetry
from the store, judges the gates of every active rollout, lets :func:`~edgeml.fleet.rollout.step`
decide, saves the record, and reconciles every device's desired state (publishing a retained
``DesiredState`` only where it changed). Nothing lives only in memory: the aggregates below are
a cache rebuilt from the store after a restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from device_agent.errors import SchemaError
from device_agent.protocol import DesiredState, ModelManifest, TelemetrySummary
from edgeml.errors import EdgemlError, FleetError
from edgeml.fleet.gates import GateInputs, evaluate_gates, interpolated_quantile, parse_gates
from edgeml.fleet.rollout import (
    ACTIVE,
    DeviceView,
    Rollout,
    Step,
    apply_command,
    desired_version,
    in_target,
    new_rollout,
    pick_previous,
    progress,
    step,
)
from edgeml.fleet.store import Store

log = logging.getLogger("edgeml.fleet.engine")

# events that mean a device gave up on a version (transient download trouble is retried by the
# device and does not count)
FAILURE_EVENTS = frozenset(
    {"rolled_back", "rollback", "update_failed", "self_test_failed", "selftest_failed", "verify_failed",
     "verification_failed", "activation_failed", "probation_failed", "rejected", "loop_guard",
     "shadow_rejected"}
)
FAILURE_STATES = frozenset({"rolled_back", "failed"})

ManifestLookup = Callable[[str, str], Optional[ModelManifest]]
Publisher = Callable[[str, DesiredState], None]
AlertSink = Callable[[str, str, Optional[str], Optional[str], Optional[float]], None]


def is_failure_event(event: dict[str, Any]) -> bool:
    return event.get("event") in FAILURE_EVENTS or event.get("to_state") in FAILURE_STATES


@dataclass
class _Acc:
    """Per-device merged summaries of one version since a time, read incrementally by row id."""

    version: str
    since: float
    skip_straddling: bool = True
    after_id: int = 0
    per_device: dict[str, TelemetrySummary] = field(default_factory=dict)
    psi_weighted: dict[str, tuple[float, int]] = field(default_factory=dict)

    def update(self, store: Store, model: str) -> None:
        rows = store.telemetry_rows(
            model=model, version=self.version, since=self.since, after_id=self.after_id,
            columns=("id", "device_id", "window_start", "requests", "psi_max", "body"),
        )
        for row in rows:
            self.after_id = max(self.after_id, row["id"])
            if self.skip_straddling and (row["window_start"] or 0.0) < self.since:
                continue  # began before the stage: partly another version or the switch itself
            try:
                summary = TelemetrySummary.from_dict(json.loads(row["body"]).get("summary") or {})
            except (SchemaError, ValueError) as exc:
                log.warning("skipping an unreadable telemetry window of %s: %s", row["device_id"], exc)
                continue
            dev = row["device_id"]
            prev = self.per_device.get(dev)
            try:
                self.per_device[dev] = summary if prev is None else prev + summary
            except SchemaError:
                self.per_device[dev] = summary  # the feature layout changed: keep the newest
            if row["psi_max"] is not None and row["requests"]:
                s, n = self.psi_weighted.get(dev, (0.0, 0))
                self.psi_weighted[dev] = (s + row["psi_max"] * row["requests"], n + row["requests"])

    def merged(self, devices: Optional[set[str]] = None) -> TelemetrySummary:
        total = TelemetrySummary()
        for dev, s in self.per_device.items():
            if devices is None or dev in devices:
                try:
                    total = total + s
                except SchemaError:
                    continue
        return total

    def psi(self, devices: Optional[set[str]] = None) -> Optional[float]:
        s = n = 0.0
        for dev, (ws, wn) in self.psi_weighted.items():
            if devices is None or dev in devices:
                s, n = s + ws, n + wn
        return s / n if n else None


class Engine:
    """Drive rollouts from store data. ``publish(device_id, desired)`` sends a retained desired state."""

    def __init__(
        self,
        store: Store,
        publish: Publisher,
        manifest_lookup: ManifestLookup | None = None,
        on_alert: AlertSink | None = None,
        baseline_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.publish = publish
        self.manifest_lookup = manifest_lookup
        self.on_alert = on_alert
        self.baseline_s = baseline_s
        self.clock = clock
        self._acc: dict[tuple[str, int, str], _Acc] = {}
        self._manifests: dict[tuple[str, str], Optional[ModelManifest]] = {}
        self.last_status: dict[str, dict[str, Any]] = {}

    # operator API (also used by the CLI directly on the store) ----------------------------------
    def start_rollout(self, model: str, version: str, **options: Any) -> Rollout:
        """Create a rollout (see :func:`~edgeml.fleet.rollout.new_rollout` for options). The previous
        version is what most targeted devices run now. Raises UsageError/FleetError."""
        return start_rollout(self.store, model, version, now=self.clock(), **options)

    # one tick ----------------------------------------------------------------------------------
    def tick(self, republish: bool = False) -> list[Step]:
        """Apply commands, step every active rollout, reconcile desired states (``republish``: send
        every device's desired state again, e.g. after a reconnect to a broker that may have lost
        its retained messages). Returns the steps."""
        now = self.clock()
        devices = self.store.device_views()
        self._apply_commands(devices, now)
        steps = []
        active = self.store.rollouts(states=ACTIVE)
        live = {r.id for r in active}
        for key in [k for k in self._acc if k[0] not in live]:
            del self._acc[key]  # a finished rollout's aggregates
        for r in active:
            try:
                steps.append(self._step(r, devices, now))
            except EdgemlError as exc:
                log.error("rollout %s: %s", r.id, exc.message)
        self.reconcile(devices, now, force=republish)
        return steps

    def _apply_commands(self, devices: Sequence[DeviceView], now: float) -> None:
        for cmd in self.store.pending_commands():
            r = self.store.rollout(cmd["rollout_id"])
            if r is None:
                self.store.mark_command(cmd["id"], f"error: no rollout {cmd['rollout_id']}", now)
                continue
            try:
                s = apply_command(r, cmd["command"], now, devices)
            except EdgemlError as exc:
                self.store.mark_command(cmd["id"], f"error: {exc.message}", now)
                continue
            self.store.save_rollout(s.rollout)
            self.store.mark_command(cmd["id"], f"ok: {s.rollout.state}", now)
            log.info("rollout %s: %s -> %s", r.id, cmd["command"], s.rollout.state)
            if s.rollout.state == "aborted":
                self._alert("rollout_aborted", f"rollout {r.id} aborted by the operator", r.model, r.version, None)

    def _manifest(self, model: str, version: str) -> Optional[ModelManifest]:
        key = (model, version)
        if key not in self._manifests and self.manifest_lookup is not None:
            try:
                self._manifests[key] = self.manifest_lookup(model, version)
            except Exception as exc:  # noqa: BLE001 - a missing manifest only disables the reference PSI
                log.info("no manifest for %s %s: %s", model, version, exc)
                self._manifests[key] = None
        return self._manifests.get(key)

    def _acc_for(self, r: Rollout, role: str, version: str, since: float) -> _Acc:
        key = (r.id, r.stage_index, role)
        acc = self._acc.get(key)
        if acc is None or acc.since != since or acc.version != version:
            for k in [k for k in self._acc if k[0] == r.id and k[1] != r.stage_index]:
                del self._acc[k]
            acc = self._acc[key] = _Acc(version, since, skip_straddling=role != "baseline")
        acc.update(self.store, r.model)
        return acc

    def gate_inputs(self, r: Rollout, devices: Sequence[DeviceView]) -> tuple[GateInputs, bool]:
        """Merged telemetry of the cohort (candidate, windows that began after the stage started)
        and of the control group (targeted devices outside the cohort on the previous version,
        over the same time), plus failures since the rollout began.

        The comparison is concurrent so that whatever changes for everyone at once (load, network)
        cancels out. A stage without a concurrent control (100 %) judges only the absolute gates:
        the relative ones held against a control in the earlier stages. A one-stage rollout compares
        with the previous version's windows from ``baseline_s`` before it started."""
        assert r.stage_started_at is not None
        targeted = [d for d in devices if in_target(r.target, r.model, d)]
        cohort = {d.device_id for d in targeted if r.in_cohort(d.device_id)}
        outside = {d.device_id for d in targeted} - cohort
        data = GateInputs()
        has_control = False
        if r.stage_mode == "shadow":
            assert r.previous_version
            acc = self._acc_for(r, "cohort", r.previous_version, r.stage_started_at)
            data.cohort = acc.merged(cohort)
        else:
            acc = self._acc_for(r, "cohort", r.version, r.stage_started_at)
            data.cohort = acc.merged(cohort)
            data.cohort_psi_fallback = acc.psi(cohort)
            if r.previous_version:
                ctl = self._acc_for(r, "control", r.previous_version, r.stage_started_at)
                data.control = ctl.merged(outside)
                if not data.control.requests and len(r.plan) == 1:
                    base = self._acc_for(r, "baseline", r.previous_version, r.stage_started_at - self.baseline_s)
                    data.control = base.merged()
                has_control = data.control.requests > 0
        manifest = self._manifest(r.model, r.version)
        if manifest is not None and manifest.reference.features:
            data.reference_freqs = manifest.reference.feature_freqs
        failed: dict[str, str] = {}
        for e in self.store.events(limit=100_000, model=r.model, version=r.version, since=r.created_at):
            if is_failure_event(e):
                failed[e["device_id"]] = f"{e['device_id']}: {e['event']}: {e['reason'] or ''}".strip()
        data.update_failures = len(failed)
        data.failure_notes = sorted(failed.values())
        return data, has_control

    def _step(self, r: Rollout, devices: Sequence[DeviceView], now: float) -> Step:
        if r.stage_started_at is None:
            s = step(r, devices, [], now)
        else:
            data, has_control = self.gate_inputs(r, devices)
            results = evaluate_gates(
                parse_gates(r.gates), data, r.min_requests, has_control, shadow_stage=r.stage_mode == "shadow"
            )
            s = step(r, devices, results, now)
            self.last_status[r.id] = {
                "cohort_requests": data.cohort.requests,
                "control_requests": data.control.requests,
                "cohort_p95_ms": interpolated_quantile(data.cohort.latency, 0.95),
                "control_p95_ms": interpolated_quantile(data.control.latency, 0.95),
            }
        if s.changed:
            self.store.save_rollout(s.rollout)
        if s.stage_started:
            log.info("rollout %s: %s", r.id, s.rollout.history[-1]["detail"])
        if s.halted:
            log.warning("rollout %s halted: %s", r.id, s.rollout.reason)
            self._alert("rollout_halted", f"rollout {r.id} halted and rolled back: {s.rollout.reason}",
                        r.model, r.version, None)
        if s.completed:
            log.info("rollout %s completed", r.id)
        return s

    def _alert(self, rule: str, message: str, model: str | None, version: str | None, value: float | None) -> None:
        self.store.add_alert(rule, message, model, version, value, ("log",))
        if self.on_alert is not None:
            try:
                self.on_alert(rule, message, model, version, value)
            except Exception:  # noqa: BLE001
                log.exception("alert action failed")

    def halt(self, rollout_id: str, reason: str) -> Optional[Rollout]:
        """Halt an active rollout from outside the gates (an alert's auto_rollback)."""
        r = self.store.rollout(rollout_id)
        if r is None or r.state not in ACTIVE:
            return None
        now = self.clock()
        r.state, r.reason, r.finished_at, r.updated_at = "halted", reason, now, now
        r.history.append({"t": now, "event": "halted", "detail": reason})
        self.store.save_rollout(r)
        self.reconcile(self.store.device_views(), now)
        return r

    # desired state -----------------------------------------------------------------------------
    def reconcile(self, devices: Sequence[DeviceView], now: float, force: bool = False) -> int:
        """Publish the desired state every device should have where it differs from what was last
        published (every one with ``force``). Returns how many were published."""
        by_model: dict[str, list[Rollout]] = {}
        for r in self.store.rollouts():
            by_model.setdefault(r.model, []).append(r)  # newest first
        recorded = {row["device_id"]: row for row in self.store.devices()}
        changes = []
        for d in devices:
            want = self._governing(d, by_model)
            if want is None:
                continue
            r, version, shadow = want
            have = recorded.get(d.device_id, {})
            if not force and (have.get("desired_model"), have.get("desired_version"), have.get("desired_shadow")) == (
                r.model, version, shadow,
            ):
                continue
            msg = DesiredState(
                model=r.model,
                version=version,
                shadow_version=shadow,
                shadow_fraction=r.shadow_fraction if shadow else 0.0,
                rollout=r.id,
                issued_at=now,
            )
            try:
                self.publish(d.device_id, msg)
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                log.warning("could not publish the desired state of %s: %s", d.device_id, exc)
                continue
            changes.append(
                {"device_id": d.device_id, "model": r.model, "version": version, "shadow": shadow, "rollout": r.id,
                 "at": now}
            )
        self.store.set_desired(changes)
        return len(changes)

    @staticmethod
    def _governing(d: DeviceView, by_model: dict[str, list[Rollout]]) -> Optional[tuple[Rollout, str, Optional[str]]]:
        models = [d.model] if d.model in by_model else sorted(by_model)
        for model in models:
            for r in by_model[model]:
                if not in_target(r.target, r.model, d):
                    continue
                version, shadow = desired_version(r, d.device_id)
                if version is None:
                    break  # the newest rollout concerning this device asks nothing (no previous version)
                return r, version, shadow
        return None

    # views -------------------------------------------------------------------------------------
    def status(self, r: Rollout, devices: Sequence[DeviceView] | None = None) -> dict[str, Any]:
        """The rollout as the API and CLI show it (docs/INTERFACES.md §4)."""
        devices = self.store.device_views() if devices is None else devices
        targeted = [d for d in devices if in_target(r.target, r.model, d)]
        prog = progress(r, targeted)
        by_version: dict[str, int] = {}
        for d in targeted:
            by_version[d.version or "-"] = by_version.get(d.version or "-", 0) + 1
        return {
            "id": r.id,
            "model": r.model,
            "version": r.version,
            "previous_version": r.previous_version,
            "state": r.state,
            "target": r.target,
            "stage_index": r.stage_index,
            "stages": [p for p, _ in r.plan],
            "modes": [m for _, m in r.plan],
            "stage_started_at": r.stage_started_at,
            "soak_s": r.soak_s,
            "healthy_since": r.healthy_since,
            "devices_at_version": sum(1 for d in targeted if d.version == r.version),
            "cohort_size": len(prog.cohort),
            "cohort_at_version": len(prog.at_version),
            "devices_total": len(targeted),
            "devices_by_version": by_version,
            "gates": r.last_gates,
            "reason": r.reason,
            "history": r.history,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "finished_at": r.finished_at,
            "measured": self.last_status.get(r.id, {}),
        }


def start_rollout(store: Store, model: str, version: str, *, now: float | None = None, **options: Any) -> Rollout:
    """Create and store a rollout; the controller drives it. ``previous_version`` defaults to what
    most targeted devices run now. Raises UsageError for bad options, FleetError when the model
    already has an active rollout."""
    now = time.time() if now is None else now
    target = options.get("target", "all")
    previous = options.pop("previous_version", None)
    if previous is None:
        previous = pick_previous(model, target, store.device_views())
    r = new_rollout(model, version, previous, now=now, **options)
    return store.create_rollout(r)


def queue_command(store: Store, ref: str, command: str) -> tuple[Rollout, int]:
    """Queue an operator command for the controller. Validates it against the rollout's state now.
    Raises FleetError/UsageError."""
    r = store.find_rollout(ref)
    apply_command(r, command, time.time())  # raises if it does not apply
    if r.state not in ACTIVE and command != "abort":
        raise FleetError(f"rollout {r.id} is {r.state}")
    return r, store.add_command(r.id, command)
