"""The update worker: carries out the state machine's steps with the updater, the slots and the
runtime. Every step persists the new state before its effect is relied on, and the resume rule
(:data:`statemachine.RESUME`) is applied once at start.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from device_agent.agent import statemachine as sm
from device_agent.agent.model import LoadedModel, SelfTestError, load_model, parse_manifest
from device_agent.agent.probation import PASS
from device_agent.agent.slots import sha256_file
from device_agent.errors import AgentError, ConfigError, DataError, TransportError
from device_agent.protocol.versions import version_key
from device_agent.runtime import choose_backend
from device_agent.transport.mqtt import backoff_delay

if TYPE_CHECKING:
    from device_agent.agent.core import Agent

log = logging.getLogger("edgeml.agent.updates")

# the reason prefix of a download the data checks rejected (retried after ``rejected_retry_s``)
REJECTED_DOWNLOAD = "download rejected: "


class UpdateDriver:
    """Drives one agent's updates on its own thread."""

    def __init__(self, agent: Agent, updater_factory: Optional[Callable[[Agent], Any]] = None) -> None:
        self.agent = agent
        self.cfg = agent.cfg
        self.factory = updater_factory
        self._updater: Any = None
        self._transport_failures = 0
        self._last_check = 0.0
        self._reported_missing: Optional[str] = None
        self.progress: tuple[int, int] = (0, 0)
        # test/simulator hook: called with (done, total) bytes while a download runs
        self.on_progress: Optional[Callable[[int, int], None]] = None
        self._shadow_failed: set[str] = set()
        self._desired_key: Optional[str] = None
        self._rejected_at: dict[str, float] = {}

    # ------------------------------------------------------------------ updater
    def provision_root(self) -> None:
        """Copy the provisioned ``trusted_root`` into the metadata folder on first start."""
        root = self.cfg.metadata_dir / "root.json"
        if not root.exists() and self.cfg.trusted_root is not None:
            if not self.cfg.trusted_root.exists():
                raise ConfigError(
                    f"trusted_root {self.cfg.trusted_root} does not exist",
                    hint="copy the repository's root.json to the device (edgeml keys / publish write it)",
                )
            self.cfg.metadata_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.cfg.trusted_root, root)

    def updater(self) -> Any:
        """The updater (created on first use). Raises ConfigError without a trusted root."""
        if self._updater is None:
            if self.factory is not None:
                self._updater = self.factory(self.agent)
            else:
                if not (self.cfg.metadata_dir / "root.json").exists():
                    raise ConfigError(
                        f"no trusted root at {self.cfg.metadata_dir / 'root.json'}",
                        hint="set trusted_root in agent.toml to the repository's root.json",
                    )
                from device_agent.updater import TLSFiles, Updater, UpdaterConfig

                t = self.cfg.update_timeout
                tls = None
                if self.cfg.ca_file or self.cfg.cert_file:
                    tls = TLSFiles(ca_file=self.cfg.ca_file, cert_file=self.cfg.cert_file, key_file=self.cfg.key_file)
                self._updater = Updater(
                    self.cfg.metadata_dir,
                    self.cfg.broker_url,
                    self.agent.topics,
                    config=UpdaterConfig(
                        max_target_bytes=self.cfg.max_download_bytes,
                        request_timeout=t,
                        connect_timeout=t,
                        reconnect_timeout=t,
                    ),
                    cache_dir=self.cfg.cache_dir,
                    client_id=f"edgeml-updater-{self.cfg.fleet}-{self.cfg.device_id}",
                    tls=tls,
                )
        return self._updater

    def close(self) -> None:
        if self._updater is not None:
            try:
                self._updater.close()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
            self._updater = None

    # ------------------------------------------------------------------ resume
    def resume(self) -> None:
        """Apply the resume rule of the persisted state (called once, before serving traffic)."""
        a = self.agent
        rec = a.record
        if rec.state in sm.RESTING:
            return
        rec.attempts += 1
        a.persist()
        a.emit(
            "resume",
            reason=f"restarted in {rec.state} (attempt {rec.attempts}): {sm.RESUME[rec.state]}",
            model=rec.target.name if rec.target else None,
            version=rec.target.version if rec.target else None,
        )
        active_is_candidate = a.active is not None and a.active.slot.slot == rec.candidate_slot
        if rec.attempts > self.cfg.max_update_attempts:
            why = f"loop guard: agent restarted {rec.attempts} times during {rec.state}"
            if rec.state in (sm.ACTIVATING, sm.PROBATION):
                self._roll_back(sm.SELF_TEST_FAILED if rec.state == sm.ACTIVATING else sm.PROBATION_FAILED, why)
            else:
                a.transition(sm.LOOP_GUARD, why)
            return
        if rec.state == sm.ACTIVATING and active_is_candidate:
            self._load_fallback()
            a.begin_probation()
            a.transition(sm.SELF_TEST_PASSED, "resumed: the candidate was already active and passed its self-test")
        elif rec.state == sm.PROBATION:
            if active_is_candidate:
                self._load_fallback()
                a.begin_probation()
            else:
                a.transition(sm.PROBATION_FAILED, "the candidate slot was unusable after a restart during probation")

    def _load_fallback(self) -> None:
        """Load the slot to roll back to (kept warm during probation)."""
        a = self.agent
        p = a.slots.pointer()
        before = p.get("before") if isinstance(p.get("before"), dict) else None
        slot = (before or {}).get("active") or p.get("previous")
        if not slot or (a.active is not None and a.active.slot.slot == slot):
            return
        try:
            a.fallback = load_model(a.slots.verify(slot), self.cfg.runtime, self.cfg.threads, a.runtime_wrapper)
        except (DataError, ConfigError) as exc:
            log.warning("fallback slot %s unusable: %s", slot, exc.message)

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        a = self.agent
        while not a._stop.is_set():
            wait = self.cfg.update_check_interval
            try:
                wait = self.drive()
            except ConfigError as exc:  # e.g. no trusted root: retrying soon will not help
                if a.last_error != exc.message:
                    log.warning("updates disabled: %s (%s)", exc.message, exc.hint)
                    a.emit("updates_disabled", reason=exc.message)
                a.last_error = exc.message
            except AgentError as exc:
                a.last_error = exc.message
                log.warning("update step failed: %s", exc.message)
                wait = min(wait, 2.0)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                a.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("update worker error")
                wait = min(wait, 2.0)
            a._kick.wait(wait)
            a._kick.clear()

    def drive(self) -> float:
        """Advance as far as possible. Returns how long to wait before the next call."""
        a = self.agent
        for _ in range(3):  # an update that ends may reveal the next thing to do (shadow, newer target)
            if a.record.state in sm.RESTING:
                self.consider()
                if a.record.state in sm.RESTING:
                    self.sync_shadow()
                    if not self.cfg.model:
                        self.close()  # nothing to poll: free the updater's connection until needed
                    return self.cfg.update_check_interval
            while a.record.state in sm.IN_PROGRESS and not a._stop.is_set():
                wait = self.step_once()
                if wait is not None:
                    return wait
        return self.cfg.update_check_interval

    # ------------------------------------------------------------------ choose a target
    def wanted(self) -> Optional[tuple[str, str]]:
        a = self.agent
        if a.desired is not None:
            return a.desired.model, a.desired.version
        if self.cfg.model:
            up = self.updater()
            up.refresh()
            rel = up.newest(self.cfg.model)
            if rel is not None:
                return str(rel.name), str(rel.version)
        return None

    def find_release(self, name: str, version: str, refresh: bool = True) -> Any:
        up = self.updater()
        if refresh:
            up.refresh()
        for rel in up.releases(name):
            if str(rel.version) == version:
                return rel
        return None

    def sync_shadow(self) -> None:
        """Load (or drop) the shadow candidate the desired state asks for. The shadow never
        answers requests; it is downloaded and verified like an update, staged in its own slot,
        self-tested, and run beside the active model on a sampled fraction of requests."""
        a = self.agent
        d = a.desired
        want = d.shadow_version if d is not None and d.shadow_fraction > 0 else None
        current = a.shadow
        if want is None or d is None:
            if current is not None:
                a.shadow = None
                a.emit("shadow_stopped", reason="the desired state no longer asks for a shadow")
            return
        if current is not None and current.model.version == want and current.model.name == d.model:
            current.fraction = d.shadow_fraction
            return
        key = f"{d.model}@{want}"
        if key in self._shadow_failed:
            return
        try:
            rel = self.find_release(d.model, want)
            if rel is None:
                return
            dest_dir = self.cfg.data_dir / "downloads"
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / f"shadow-{d.model}-{want}"
            path = self.updater().download(rel, dest, progress=self._progress)
            info = a.slots.stage(Path(path), manifest_dict(rel), d.model, want)
            Path(path).unlink(missing_ok=True)
            model = load_model(info, self.cfg.runtime, self.cfg.threads, a.runtime_wrapper)
        except TransportError as exc:
            a.last_error = f"shadow download interrupted: {exc.message}"
            return
        except (DataError, ConfigError) as exc:
            self._shadow_failed.add(key)
            a.emit("shadow_rejected", reason=exc.message, model=d.model, version=want)
            return
        from device_agent.agent.core import Shadow

        a.shadow = Shadow(model, d.shadow_fraction)
        a.emit(
            "shadow_started",
            reason=f"{want} runs beside the active model on {d.shadow_fraction:.0%} of requests",
            model=d.model,
            version=want,
        )

    def consider(self) -> None:
        """In a resting state: start an update when the wanted model differs from the active one."""
        a = self.agent
        try:
            want = self.wanted()
        except TransportError as exc:
            a.last_error = exc.message
            return
        if want is None:
            return
        name, version = want
        self._forget_refusals_on_new_desired(f"{name}@{version}")
        active = a.active
        if active is not None and (active.name, active.version) == (name, version):
            a.last_error = None if a.record.state != sm.ROLLED_BACK else a.last_error
            return
        key = f"{name}@{version}"
        rec = a.record
        if key in rec.refused:
            if not self._retry_due(key, rec.refused[key]):
                return
            del rec.refused[key]
            a.persist()
            a.emit("retry", reason=f"trying {key} again after its download was rejected", model=name, version=version)
        prev = a.slots.previous
        if prev:
            try:
                info = a.slots.info(prev)
                if (info.name, info.version) == (name, version):
                    a.transition(
                        sm.REVERT,
                        f"return to the previous slot's {name} {version}",
                        target=sm.Target(name, version, manifest=info.manifest),
                        candidate_slot=prev,
                        download_path=None,
                        mode="revert",
                    )
                    return
            except DataError:
                pass
        if active is not None and active.name == name:
            try:
                older = version_key(version) < version_key(active.version)
            except DataError as exc:
                older, reason = True, exc.message
            else:
                reason = (
                    f"downgrade from {active.version} to {version} refused: only the previous slot's version "
                    "may be returned to"
                )
            if older:
                self.refuse(key, reason)
                return
        rel = self.find_release(name, version)
        if rel is None:
            msg = f"release {name} {version} is not in the repository (yet)"
            if self._reported_missing != key:
                a.emit("waiting", reason=msg, model=name, version=version)
                self._reported_missing = key
            a.last_error = msg
            return
        length = int(getattr(rel, "length", 0) or 0)
        if length > self.cfg.max_download_bytes:
            limit = self.cfg.max_download_bytes
            self.refuse(key, f"{name} {version} is {length} bytes, over max_download_bytes {limit}")
            return
        # chunks left by an abandoned or rejected download must not pile up across updates
        clear = getattr(self._updater, "clear_cache", None)
        if callable(clear):
            clear()
        a.transition(
            sm.START,
            f"update to {name} {version}",
            target=sm.Target(
                name,
                version,
                str(getattr(rel, "target_path", "")),
                length,
                manifest_dict(rel),
                str((getattr(rel, "hashes", None) or {}).get("sha256", "")),
            ),
            candidate_slot=None,
            download_path=None,
            mode="update",
        )

    def _forget_refusals_on_new_desired(self, key: str) -> None:
        """When the controller names a different target than before, earlier refusals (failed or
        rolled-back versions) are forgotten: asking for one of them again later is a deliberate
        retry. Following the newest release (no controller) keeps them, or it would loop."""
        a = self.agent
        if a.desired is None:
            return
        if self._desired_key is not None and key != self._desired_key and a.record.refused:
            a.record.refused = {k: v for k, v in a.record.refused.items() if k == key}
            a.persist()
        self._desired_key = key

    def _retry_due(self, key: str, reason: str) -> bool:
        """A refusal whose download was rejected by the data checks (expired or not-yet-refreshed
        metadata, a tampered chunk) is retried after ``rejected_retry_s``: the repository may have
        been re-signed since. Failed self-tests, probation failures and downgrades stay refused."""
        if not reason.startswith(REJECTED_DOWNLOAD):
            return False
        first = self._rejected_at.setdefault(key, time.monotonic())
        if time.monotonic() - first < self.cfg.rejected_retry_s:
            return False
        self._rejected_at.pop(key, None)
        return True

    def refuse(self, key: str, reason: str) -> None:
        a = self.agent
        a.record.refused[key] = reason
        a.persist()
        a.last_error = reason
        name, _, version = key.partition("@")
        a.emit("refused", reason=reason, model=name, version=version)
        a._publish_state()

    def _aborted(self) -> bool:
        """True (and the update abandoned) when the desired state moved away mid-download."""
        a = self.agent
        d, t = a.desired, a.record.target
        if d is None or t is None or (d.model, d.version) == (t.name, t.version):
            return False
        a.transition(sm.ABORT, f"desired state changed to {d.model} {d.version}")
        return True

    # ------------------------------------------------------------------ steps
    def step_once(self) -> Optional[float]:
        """Carry out the current state's step. Returns a wait (seconds) when it must pause."""
        a = self.agent
        rec = a.record
        assert rec.target is not None, "an update in progress always has a target"
        st = rec.state
        if st in (sm.DOWNLOADING, sm.VERIFYING, sm.STAGED) and self._aborted():
            return None
        if st == sm.DOWNLOADING:
            return self._download(rec.target)
        if st == sm.VERIFYING:
            self._verify(rec.target, rec.download_path)
        elif st == sm.STAGED:
            try:
                a.slots.verify(rec.candidate_slot or "")
            except DataError as exc:
                a.transition(sm.REDOWNLOAD, f"staged slot unusable ({exc.message}); downloading again")
                return None
            a.transition(sm.ACTIVATE, "staged slot verified")
        elif st == sm.ACTIVATING:
            self._activate(rec.target, rec.candidate_slot or "")
        elif st == sm.PROBATION:
            verdict = a.probation_verdict()
            if verdict is None:
                return 0.1
            result, reason = verdict
            if result == PASS:
                a.slots.commit()
                a.probation = None
                a.fallback = None
                a.transition(sm.PROBATION_PASSED, reason)
                a.slots.gc({a.shadow.model.slot.slot} if a.shadow is not None else set())
            else:
                self._roll_back(sm.PROBATION_FAILED, reason)
        return None

    def _download(self, target: sm.Target) -> Optional[float]:
        a = self.agent
        try:
            rel = self.find_release(target.name, target.version)
            if rel is None:
                a.transition(sm.REJECTED, f"release {target.name} {target.version} is no longer in the repository")
                return None
            dest_dir = self.cfg.data_dir / "downloads"
            dest_dir.mkdir(parents=True, exist_ok=True)
            filename = Path(str(getattr(rel, "target_path", "") or target.manifest.get("filename", "model"))).name
            dest = dest_dir / f"{target.name}-{target.version}-{filename}"
            path = self.updater().download(rel, dest, progress=self._progress)
        except TransportError as exc:
            delay = backoff_delay(self._transport_failures, 0.5, 10.0)
            self._transport_failures += 1
            a.last_error = f"download interrupted: {exc.message}"
            log.info("download of %s interrupted (%s); retry in %.1fs", target.key, exc.message, delay)
            return delay
        except DataError as exc:
            a.transition(sm.REJECTED, f"{REJECTED_DOWNLOAD}{exc.message}")
            return None
        self._transport_failures = 0
        a.transition(
            sm.DOWNLOADED,
            f"downloaded and verified by the updater ({target.length} bytes)",
            download_path=str(path or dest),
        )
        return None

    def _progress(self, done: int, total: int) -> None:
        self.progress = (done, total)
        if self.on_progress is not None:
            self.on_progress(done, total)

    def _verify(self, target: sm.Target, download_path: Optional[str]) -> None:
        a = self.agent
        path = Path(download_path or "")
        if not download_path or not path.is_file():
            a.transition(sm.REDOWNLOAD, "downloaded file is gone; downloading again")
            return
        digest, size = sha256_file(path)
        if target.length and size != target.length:
            path.unlink()
            a.transition(sm.REDOWNLOAD, f"downloaded file has {size} bytes, expected {target.length}")
            return
        if target.sha256 and digest != target.sha256:
            path.unlink()
            a.transition(sm.REDOWNLOAD, "downloaded file does not match its signed sha256; downloading again")
            return
        try:
            manifest = parse_manifest(dict(target.manifest))
            if manifest.name != target.name:
                raise DataError(f"manifest names model {manifest.name!r}, the release is {target.name!r}")
            choose_backend(manifest.format, self.cfg.runtime)
        except (DataError, ConfigError) as exc:
            a.transition(sm.REJECTED, f"verification failed: {exc.message}")
            return
        info = a.slots.stage(path, target.manifest, target.name, target.version, measured=(digest, size))
        a.transition(sm.VERIFIED, f"staged in slot {info.slot}", candidate_slot=info.slot)
        try:
            path.unlink()
        except OSError:
            pass

    def _activate(self, target: sm.Target, slot: str) -> None:
        a = self.agent
        reverting = a.record.mode == "revert"
        try:
            info = a.slots.verify(slot)
            model = load_model(info, self.cfg.runtime, self.cfg.threads, a.runtime_wrapper)
        except (SelfTestError, DataError, ConfigError) as exc:
            a.transition(sm.SELF_TEST_FAILED, f"self-test failed, the model never served: {exc.message}")
            return
        old = a.active
        a.slots.switch(slot)
        if reverting:
            a.slots.commit()
            a.set_active(model)
            a.transition(sm.REVERTED, f"returned to {target.name} {target.version} (self-test passed)")
            return
        a.fallback = old
        a.begin_probation(model)  # the candidate's latency budget, not the old model's
        a.set_active(model)
        a.transition(sm.SELF_TEST_PASSED, f"self-test passed ({len(model.manifest.golden)} golden vectors); probation")

    def _roll_back(self, event: str, reason: str) -> None:
        """Return to the slot before the switch and report why."""
        a = self.agent
        bad = a.active
        candidate = a.record.candidate_slot
        if bad is not None and bad.slot.slot == candidate:
            if a.slots.rollback() == candidate:
                # nothing to return to on disk (a first update): the failed candidate must not stay
                # the active slot, nor be found again as "an intact slot" after a restart
                a.slots.drop_active(None)
                a.slots.remove(candidate)
            fb: Optional[LoadedModel] = a.fallback
            if fb is None:
                slot = a.slots.active
                if slot:
                    try:
                        fb = load_model(a.slots.verify(slot), self.cfg.runtime, self.cfg.threads, a.runtime_wrapper)
                    except (DataError, ConfigError) as exc:
                        log.warning("rollback slot %s unusable: %s", slot, exc.message)
            if fb is not None:
                a.set_active(fb)
            else:
                a.active = None
        a.probation = None
        a.fallback = None
        a.transition(event, f"rolled back: {reason}")


def manifest_dict(release: Any) -> dict[str, Any]:
    """A release's manifest as a dict (the real Updater gives a ModelManifest)."""
    m = getattr(release, "manifest", None)
    if m is None:
        return {}
    to_dict = getattr(m, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(m)
