"""The Agent: serves the active model, follows the desired state, reports state, events and
telemetry. The in-process API (docs/INTERFACES.md §3)::

    agent = Agent(AgentConfig(...), runtime_wrapper=None)
    agent.start(); agent.predict(x); agent.status(); agent.stop()

Threads per agent: the MQTT network thread, one telemetry thread (windows + spool delivery),
one update worker, and the HTTP server when ``http_address`` is set.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numpy as np

from device_agent import __version__
from device_agent.agent import statemachine as sm
from device_agent.agent.audit import AuditLog
from device_agent.agent.config import AgentConfig
from device_agent.agent.model import LoadedModel, RuntimeWrapper, load_model, parse_manifest
from device_agent.agent.probation import PASS, Probation
from device_agent.agent.slots import SlotStore
from device_agent.agent.telemetry import Spool, WindowAccumulator, drift_of
from device_agent.agent.updates import UpdateDriver
from device_agent.errors import AgentError, ConfigError, DataError, SchemaError
from device_agent.fsutil import atomic_write_json, read_json
from device_agent.protocol.manifest import ReferenceProfile
from device_agent.protocol.messages import DesiredState, Event, ReportedState, Telemetry, TelemetrySummary
from device_agent.protocol.topics import Topics
from device_agent.serving.inputs import InputError, all_finite, check_batch
from device_agent.transport.mqtt import MqttTransport, wait_acked

log = logging.getLogger("edgeml.agent")

# Test hook: ``EDGEML_AGENT_PAUSE_IN=STATE`` or ``STATE:VERSION`` pauses the update worker on
# entering STATE (for that target version) and writes ``<data_dir>/paused-STATE``, so a test can
# SIGKILL the agent there. Serving continues while paused.
PAUSE_ENV = "EDGEML_AGENT_PAUSE_IN"

_F32 = np.dtype(np.float32)
_perf = time.perf_counter
_finite = all_finite


class NotReady(AgentError):
    """No verified model is active yet."""


class PredictError(AgentError):
    """The model failed on valid input (runtime error or NaN/inf output)."""


class Prediction:
    """One predict call's answer. ``outputs`` is the model's (n, ...) output; ``classes``,
    ``labels`` and ``confidence`` (per sample, classifiers only) are computed on first access;
    ``single`` says the input was one sample."""

    __slots__ = ("outputs", "version", "latency_ms", "single", "_names", "_classify", "_n", "_boot", "_cache")

    def __init__(
        self,
        outputs: np.ndarray,
        version: str,
        latency_ms: float,
        single: bool,
        names: list[str],
        classify: bool,
        n: int,
        boot: str,
    ) -> None:
        self.outputs = outputs
        self.version = version
        self.latency_ms = latency_ms
        self.single = single
        self._names = names
        self._classify = classify and outputs.ndim >= 2
        self._n = n
        self._boot = boot
        self._cache: Optional[tuple[np.ndarray, np.ndarray]] = None

    @property
    def request_id(self) -> str:
        return f"{self._boot}-{self._n}"

    def _classes_conf(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        if not self._classify:
            return None
        if self._cache is None:
            flat = self.outputs.reshape(self.outputs.shape[0], -1)
            classes = flat.argmax(axis=1)
            self._cache = (classes, flat[np.arange(flat.shape[0]), classes])
        return self._cache

    @property
    def classes(self) -> Optional[np.ndarray]:
        cc = self._classes_conf()
        return cc[0] if cc is not None else None

    @property
    def confidence(self) -> Optional[np.ndarray]:
        cc = self._classes_conf()
        return cc[1] if cc is not None else None

    @property
    def labels(self) -> list[str]:
        classes = self.classes
        if classes is None:
            return []
        names = self._names
        return [names[i] if i < len(names) else str(i) for i in classes.tolist()]

    @property
    def label(self) -> Optional[str]:
        labels = self.labels
        return labels[0] if labels else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "latency_ms": round(self.latency_ms, 4),
            "request_id": self.request_id,
        }
        conf = self.confidence
        if self.single:
            out["output"] = self.outputs[0].tolist()
            if conf is not None:
                out["label"] = self.label
                out["confidence"] = float(conf[0])
        else:
            out["outputs"] = self.outputs.tolist()
            if conf is not None:
                out["labels"] = self.labels
                out["confidence"] = conf.tolist()
        return out


@dataclass
class Shadow:
    model: LoadedModel
    fraction: float


class Agent:
    """One device agent. ``runtime_wrapper(runtime, manifest) -> runtime`` lets a simulator inject
    faults (slow model, NaN outputs); ``updater_factory(agent)`` replaces the real updater (tests)."""

    def __init__(
        self,
        config: AgentConfig,
        runtime_wrapper: Optional[RuntimeWrapper] = None,
        updater_factory: Optional[Callable[[Agent], Any]] = None,
    ) -> None:
        self.cfg = config
        self.runtime_wrapper = runtime_wrapper
        self.topics = Topics(config.fleet, config.topic_prefix)
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.slots = SlotStore(config.slots_dir)
        self.spool = Spool(config.spool_dir, config.spool_max_windows)
        self.window = WindowAccumulator(sample_max=config.telemetry_sample_max)
        self.started_at = time.time()
        self._boot = f"{int(self.started_at) & 0xFFFFFF:06x}"
        self.audit: Optional[AuditLog] = None
        if config.audit_log:
            self.audit = AuditLog(config.audit_path, config.audit_max_bytes, config.audit_backups, self._boot)
        self.active: Optional[LoadedModel] = None
        self.fallback: Optional[LoadedModel] = None  # the previous model, kept loaded during probation
        self.shadow: Optional[Shadow] = None
        self.probation: Optional[Probation] = None
        self.desired: Optional[DesiredState] = None
        self.record = sm.UpdateRecord()
        self.last_error: Optional[str] = None
        self.lifetime = TelemetrySummary()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._state_lock = threading.RLock()
        self._threads: list[threading.Thread] = []
        self.transport: Optional[MqttTransport] = None
        self.http: Any = None
        self.updates = UpdateDriver(self, updater_factory)
        self._last_seq = -1
        self._early_events: list[Event] = []

    # ================================================================ lifecycle
    def start(self) -> Agent:
        """Restore the slots (serve a verified model), apply the resume rule, connect, and start
        following the desired state. Raises ConfigError for unusable settings."""
        self._load_record()
        self.updates.provision_root()
        self._restore_serving()
        self.updates.resume()
        self._start_transport()
        self._spawn(self._telemetry_loop, "telemetry")
        self._spawn(self.updates.run, "updates")
        if self.cfg.http_address is not None:
            from device_agent.serving.http import start_http

            self.http = start_http(self, *self.cfg.http_host_port)  # type: ignore[misc]
        log.info("agent %s started: %s", self.cfg.device_id, json.dumps(self.status()))
        return self

    def stop(self) -> None:
        """Stop serving and threads; report the device offline (retained state); the last
        telemetry window is spooled (sent on the next start)."""
        self._stop.set()
        self._kick.set()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        for t in self._threads:
            t.join(5)
        self._threads = []
        self.updates.close()
        if self.transport is not None:
            # a clean disconnect sends no last will: say "offline" ourselves (briefly waiting for the ack)
            info = self.transport.publish(
                self.topics.state(self.cfg.device_id), self.reported_state(online=False).to_json(), qos=1, retain=True
            )
            if self.transport.connected.is_set():
                wait_acked(info, 2.0)
            self.transport.stop()
        if self.audit is not None:
            self.audit.flush()
        models = (self.active, self.fallback, self.shadow.model if self.shadow else None)
        for m in {id(x): x for x in models if x}.values():
            m.close()

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=fn, name=f"{name}-{self.cfg.device_id}", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def http_port(self) -> Optional[int]:
        return self.http.server_address[1] if self.http is not None else None

    def kick(self) -> None:
        """Wake the update worker (new desired state or repository change)."""
        self._kick.set()

    # ================================================================ state record
    def _load_record(self) -> None:
        try:
            data = read_json(self.cfg.state_path)
            self.record = sm.UpdateRecord.from_dict(data) if data is not None else sm.UpdateRecord()
        except (OSError, ValueError, DataError) as exc:
            log.warning("update state unreadable (%s); starting from idle", exc)
            self.record = sm.UpdateRecord()
            self.emit("state_reset", reason=f"update state unreadable: {exc}")

    def persist(self) -> None:
        atomic_write_json(self.cfg.state_path, self.record.to_dict())

    def transition(self, event: str, reason: str = "", **changes: Any) -> sm.UpdateRecord:
        """Apply ``event`` to the update record, persist it, report it. Raises TransitionError."""
        with self._state_lock:
            old = self.record.state
            new = sm.step(self.record, event, reason)
            for k, v in changes.items():
                setattr(new, k, v)
            self.record = new
            self.persist()
        target = new.target
        self.emit(
            new.last_event or event,
            from_state=old,
            to_state=new.state,
            model=target.name if target else None,
            version=target.version if target else None,
            reason=new.reason,
        )
        if new.state in (sm.FAILED, sm.ROLLED_BACK):
            self.last_error = new.reason
        self._publish_state()
        log.info("update %s -> %s (%s) %s", old, new.state, new.last_event, new.reason)
        self._maybe_pause(new.state)
        return new

    def _maybe_pause(self, state: str) -> None:
        want = os.environ.get(PAUSE_ENV)
        if not want:
            return
        want_state, _, want_version = want.partition(":")
        target = self.record.target
        if want_state == state and (not want_version or (target is not None and target.version == want_version)):
            marker = self.cfg.data_dir / f"paused-{state}"
            marker.write_text(str(os.getpid()))
            log.warning("test hook %s: paused in %s", PAUSE_ENV, state)
            self._stop.wait(120)

    # ================================================================ serving
    def _restore_serving(self) -> None:
        """Load the active slot (verify digest + self-test); fall back to the previous one; else
        the bootstrap model. A device that had a verified model serves one after this."""
        p = self.slots.pointer()
        before = p.get("before") if isinstance(p.get("before"), dict) else {}
        candidates = [s for s in (p["active"], p["previous"], (before or {}).get("active")) if s]
        if not p["active"]:
            # no pointer (first start, or the pointer file was lost): any intact slot on disk, the
            # newest first and an update's unfinished candidate last
            on_disk = sorted(
                self.slots.slots(),
                key=lambda s: (s == self.record.candidate_slot, -(self.slots.root / s).stat().st_mtime),
            )
            candidates += on_disk
        for slot in dict.fromkeys(candidates):
            try:
                info = self.slots.verify(slot)
                model = load_model(info, self.cfg.runtime, self.cfg.threads, self.runtime_wrapper)
            except (DataError, ConfigError) as exc:  # ConfigError: no runtime for this slot's format
                self.emit("slot_rejected", reason=exc.message, model=None, version=None)
                log.warning("slot %s not usable: %s", slot, exc.message)
                self.last_error = exc.message
                continue
            if slot != p["active"]:
                self.slots.drop_active(slot)
                self.slots.commit()
                self.emit(
                    "fallback",
                    reason=f"active slot {p['active']} unusable; serving {slot}",
                    model=model.name,
                    version=model.version,
                )
            self.set_active(model)
            break
        if self.active is None and self.cfg.bootstrap_model is not None:
            self._install_bootstrap()

    def _install_bootstrap(self) -> None:
        assert self.cfg.bootstrap_model is not None and self.cfg.bootstrap_manifest is not None
        try:
            manifest = json.loads(self.cfg.bootstrap_manifest.read_text())
            m = parse_manifest(manifest)
            info = self.slots.stage(self.cfg.bootstrap_model, manifest, m.name, m.version or "0.0.0")
            model = load_model(info, self.cfg.runtime, self.cfg.threads, self.runtime_wrapper)
        except (OSError, ValueError, DataError) as exc:
            msg = exc.message if isinstance(exc, AgentError) else str(exc)
            self.emit("bootstrap_rejected", reason=msg)
            self.last_error = f"bootstrap model rejected: {msg}"
            return
        self.slots.switch(info.slot)
        self.slots.commit()
        self.set_active(model)
        self.emit("bootstrap", reason="factory model installed", model=model.name, version=model.version)

    def set_active(self, model: LoadedModel) -> None:
        """Switch the served model (one reference assignment: in-flight requests finish on the old one)."""
        self.window.set_reference(model.manifest.reference or ReferenceProfile())
        self.active = model

    def predict(self, inputs: Any) -> Prediction:
        """Run the active model on one sample or a batch.

        Raises InputError (bad input, nothing reaches the model), NotReady (no verified model), or
        PredictError (the model failed or produced NaN/inf; during probation the previous model
        answers instead).
        """
        model = self.active
        if model is None:
            raise NotReady("no verified model is active yet", hint="wait for an update or provision a bootstrap model")
        x = inputs if type(inputs) is np.ndarray else np.asarray(inputs, dtype=np.float64)
        # fast path: a float32 batch already shaped like the model input, all finite
        if (
            x.dtype == _F32
            and x.shape[1:] == model.sample_shape
            and 0 < x.shape[0] <= self.cfg.max_batch
            and _finite(x)
        ):
            return self._run(model, x, False)
        try:
            batch, single = check_batch(x, model.spec, self.cfg.max_batch)
        except InputError:
            self.window.record_rejected()
            raise
        return self._run(model, batch, single)

    def _run(self, model: LoadedModel, batch: np.ndarray, single: bool) -> Prediction:
        t0 = _perf()
        try:
            y = model.runtime.run(batch)
        except Exception as exc:  # noqa: BLE001 - any runtime failure is counted, never crashes the agent
            return self._failed(model, batch, single, str(exc), False, (_perf() - t0) * 1000.0)
        ms = (_perf() - t0) * 1000.0
        if not _finite(y):
            return self._failed(model, batch, single, "the model produced NaN or infinite outputs", True, ms)
        prob = self.probation
        if prob is not None and model is self.active:
            prob.observe(ms)
        n = next(self._ids)
        out = y if model.classify else None
        self.window.record(batch, out, ms)
        if self.shadow is not None:
            shadow = self.shadow
            if shadow is not None and random.random() < shadow.fraction:
                self._run_shadow(shadow, batch, out)
        audit = self.audit
        if audit is not None:
            audit.record(n, model.version, batch, out, ms, model.labels)
        return Prediction(y, model.version, ms, single, model.labels, model.classify, n, self._boot)

    def _failed(
        self, model: LoadedModel, batch: np.ndarray, single: bool, error: str, nonfinite: bool, ms: float
    ) -> Prediction:
        """A failed call: counted, reported to probation; during probation the previous model
        answers. Raises PredictError otherwise."""
        prob = self.probation
        if prob is not None and model is self.active:
            prob.observe(ms, error, nonfinite)
        self.window.record_error(ms, nonfinite)
        fb = self.fallback
        if fb is not None and fb is not model and prob is not None:
            self.kick()
            return self._run(fb, batch, single)
        raise PredictError(f"{model.name} {model.version}: {error}", hint="the agent keeps serving; see events")

    def _run_shadow(self, shadow: Shadow, batch: np.ndarray, active_y: Optional[np.ndarray]) -> None:
        t0 = time.perf_counter()
        try:
            y = shadow.model.runtime.run(batch)
        except Exception:  # noqa: BLE001 - the shadow never affects answers
            return
        ms = (time.perf_counter() - t0) * 1000.0
        agree = 0
        if active_y is not None and y.ndim >= 2 and active_y.ndim >= 2:
            n = y.shape[0]
            agree = int((y.reshape(n, -1).argmax(axis=1) == active_y.reshape(n, -1).argmax(axis=1)).sum())
        self.window.record_shadow(shadow.model.version, agree, batch.shape[0], ms)

    # ================================================================ probation
    def begin_probation(self, model: Optional[LoadedModel] = None) -> None:
        """Start probation for ``model`` (default: the active one), with its own latency budget."""
        model = model or self.active
        budget = None
        if model is not None and model.manifest.latency_budget_ms:
            budget = float(model.manifest.latency_budget_ms) * self.cfg.probation_latency_factor
        self.probation = Probation(
            self.cfg.probation_requests,
            self.cfg.probation_seconds,
            time.time(),
            self.cfg.probation_max_error_rate,
            self.cfg.probation_max_nonfinite,
            budget,
        )

    def probation_verdict(self) -> Optional[tuple[str, str]]:
        prob = self.probation
        return prob.verdict(time.time()) if prob is not None else (PASS, "no probation running")

    # ================================================================ reporting
    def emit(self, event: str, reason: str = "", **fields: Any) -> None:
        """Publish one Event (QoS 1; queued while offline)."""
        model = self.active
        ev = Event(
            device_id=self.cfg.device_id,
            seq=time.time_ns() // 1000,
            ts=time.time(),
            event=event,
            from_state=fields.get("from_state"),
            to_state=fields.get("to_state"),
            model=fields.get("model", model.name if model else None),
            version=fields.get("version", model.version if model else None),
            reason=reason,
        )
        log.info("event %s: %s", event, reason)
        if self.transport is not None:
            self.transport.publish(self.topics.events(self.cfg.device_id), ev.to_json(), qos=1)
        else:
            self._early_events.append(ev)

    def reported_state(self, online: bool = True) -> ReportedState:
        model = self.active
        prev = None
        try:
            p = self.slots.pointer()
            if p["previous"]:
                prev = self.slots.info(p["previous"]).version
        except DataError:
            prev = None
        target = self.record.target
        return ReportedState(
            device_id=self.cfg.device_id,
            online=online,
            model=model.name if model else None,
            version=model.version if model else None,
            previous_version=prev,
            update_state=self.record.state,
            update_target=target.version if target and self.record.state in sm.IN_PROGRESS else None,
            last_error=self.last_error,
            group=self.cfg.group,
            runtime=model.runtime.name if model else None,
            agent_version=__version__,
            ts=time.time(),
        )

    def _publish_state(self) -> None:
        if self.transport is not None and not self._stop.is_set():
            self.transport.publish(
                self.topics.state(self.cfg.device_id), self.reported_state().to_json(), qos=1, retain=True
            )

    def status(self) -> dict[str, Any]:
        """What the agent runs and its update state."""
        rs = self.reported_state()
        target = self.record.target
        return {
            "device_id": self.cfg.device_id,
            "model": rs.model,
            "version": rs.version,
            "previous": rs.previous_version,
            "update_state": self.record.state,
            "update_target": f"{target.name} {target.version}" if target else None,
            "last_event": self.record.last_event,
            "reason": self.record.reason,
            "last_error": self.last_error,
            "runtime": rs.runtime,
            "connected": bool(self.transport and self.transport.connected.is_set()),
            "spooled_windows": len(self.spool),
            "dropped_windows": self.spool.dropped,
            "http_port": self.http_port,
        }

    # ================================================================ transport
    def _start_transport(self) -> None:
        will = ReportedState(
            device_id=self.cfg.device_id,
            online=False,
            update_state=self.record.state,
            model=self.active.name if self.active else None,
            version=self.active.version if self.active else None,
            group=self.cfg.group,
        )
        t = MqttTransport(
            self.cfg.broker_url,
            client_id=f"edgeml-agent-{self.cfg.fleet}-{self.cfg.device_id}",
            will=(self.topics.state(self.cfg.device_id), will.to_json()),
            keepalive=self.cfg.keepalive,
            backoff_min=self.cfg.reconnect_min_s,
            backoff_max=self.cfg.reconnect_max_s,
            on_connect=self._on_connect,
            ca_file=self.cfg.ca_file,
            cert_file=self.cfg.cert_file,
            key_file=self.cfg.key_file,
        )
        t.subscribe(self.topics.desired(self.cfg.device_id), self._on_desired)
        if self.cfg.model:
            t.subscribe(self.topics.repo_metadata("timestamp.json"), lambda _t, _p: self.kick())
        self.transport = t
        for ev in self._early_events:
            t.publish(self.topics.events(self.cfg.device_id), ev.to_json(), qos=1)
        self._early_events = []
        t.start()

    def _on_connect(self) -> None:
        self._publish_state()
        self._kick.set()

    def _on_desired(self, topic: str, payload: bytes) -> None:
        if not payload:
            self.desired = None
            return
        try:
            desired = DesiredState.from_json(payload)
        except SchemaError as exc:
            self.emit("desired_rejected", reason=exc.message)
            return
        if desired.model and desired != self.desired:
            self.desired = desired
            self.kick()

    # ================================================================ telemetry
    def _telemetry_loop(self) -> None:
        interval = self.cfg.telemetry_interval
        next_close = time.monotonic() + interval
        pending_info: Any = None
        pending_seq = -1
        while not self._stop.is_set():
            try:
                next_close, pending_info, pending_seq = self._telemetry_tick(
                    interval, next_close, pending_info, pending_seq
                )
            except Exception:  # noqa: BLE001 - telemetry must never stop
                log.exception("telemetry step failed")
                pending_info = None  # the window stays spooled and is sent again (readers drop duplicates)
                self._stop.wait(1.0)
        self.close_window()

    def _telemetry_tick(self, interval: float, next_close: float, pending_info: Any, pending_seq: int) -> Any:
        """Close the window when due, flush the audit log, deliver the spool in order (one window
        in flight, acknowledged before the next)."""
        now = time.monotonic()
        if now >= next_close:
            self.close_window()
            next_close += interval
            if next_close < now:
                next_close = now + interval
        if self.audit is not None:
            self.audit.flush()
        t = self.transport
        while t is not None and t.connected.is_set() and not self._stop.is_set():
            if pending_info is not None:
                if not wait_acked(pending_info, max(0.05, min(2.0, next_close - time.monotonic()))):
                    break
                self.spool.ack(pending_seq)
                pending_info = None
            item = self.spool.peek()
            if item is None:
                break
            pending_seq, payload = item
            pending_info = t.publish(self.topics.telemetry(self.cfg.device_id), payload, qos=1)
            if time.monotonic() >= next_close:
                break
        self._stop.wait(max(0.01, min(0.25, next_close - time.monotonic())))
        return next_close, pending_info, pending_seq

    def close_window(self) -> Telemetry:
        """Close the current window into a Telemetry message and spool it."""
        model = self.active
        labels = model.labels if model else []
        start, end, summary = self.window.close(labels)
        reference = model.manifest.reference if model else ReferenceProfile()
        psis, drift = drift_of(summary, reference, self.cfg.drift_psi_threshold)
        self.lifetime = self.lifetime + replace(summary, features=[])
        seq = self.spool.next_seq()
        msg = Telemetry(
            device_id=self.cfg.device_id,
            seq=seq,
            window_start=start,
            window_end=end,
            model=model.name if model else None,
            version=model.version if model else None,
            summary=summary,
            psi=psis,
            drift=drift,
            dropped=self.spool.dropped,
        )
        self.spool.put(seq, msg.to_json())
        self._last_seq = seq
        return msg

    def clear_download_dir(self) -> None:
        shutil.rmtree(self.cfg.data_dir / "downloads", ignore_errors=True)
