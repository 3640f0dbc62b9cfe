"""The fleet controller: collector + rollout engine + alerts + HTTP server in one process.

Library entry point (the CLI's ``edgeml fleet serve`` and the demo use it)::

    c = Controller(settings, broker_url="mqtt://127.0.0.1:1883", store_url=None, http_port=8765)
    c.start()
    c.start_rollout("digits", "2.0.0", stages="10,50,100", soak="30s")
    c.rollout_status("digits")        # dict, docs/INTERFACES.md §4
    c.stop()

Everything it needs to continue lives in the store, so a controller killed mid-rollout and
started again resumes where it was. While it holds the repository's online (timestamp) key it
re-signs the timestamp before it expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from device_agent.protocol import DesiredState, ModelManifest, Topics
from edgeml.errors import EdgemlError, UsageError
from edgeml.fleet import views
from edgeml.fleet.alerts import AlertEvaluator, AlertRule, load_rules
from edgeml.fleet.collector import Collector
from edgeml.fleet.engine import Engine, queue_command
from edgeml.fleet.rollout import ACTIVE
from edgeml.fleet.server import FleetHTTPServer
from edgeml.fleet.store import Store
from edgeml.settings import Settings

log = logging.getLogger("edgeml.fleet.controller")

DEFAULT_HTTP_PORT = 8765


def release_manifest_lookup(settings: Settings) -> Callable[[str, str], Optional[ModelManifest]]:
    """A lookup of a release's manifest in the local repository (None when it is not there)."""

    def lookup(name: str, version: str) -> Optional[ModelManifest]:
        try:
            from edgeml.release.repo import Repository  # the release package, when installed

            for rel in Repository(settings).releases(name):
                if rel.get("version") == version and rel.get("manifest"):
                    return ModelManifest.from_dict(rel["manifest"])
        except Exception as exc:  # noqa: BLE001 - no repository here: no reference profile
            log.debug("no manifest for %s %s: %s", name, version, exc)
        return None

    return lookup


def refresh_timestamp_if_due(settings: Settings, broker_url: str, now: Optional[datetime] = None) -> bool:
    """Re-sign and push the repository timestamp when less than half its validity is left.

    Returns False (and does nothing) when there is no repository here or the timestamp key is not
    held. Raises ReleaseError when re-signing or pushing fails.
    """
    if not settings.repo_dir.is_dir() or not settings.keys_dir.is_dir():
        return False
    try:
        from edgeml.release import broker as release_broker
        from edgeml.release.repo import Repository
    except ImportError:
        return False
    repo = Repository(settings)
    if not repo.exists():
        return False
    expires = datetime.fromisoformat(repo.status()["timestamp"]["expires"].replace("Z", "+00:00"))
    now = now or datetime.now(timezone.utc)
    if expires - now > repo.expiry["timestamp"] / 2:
        return False
    held = repo.keys.held() if hasattr(repo.keys, "held") else {}
    if held and not held.get("timestamp"):
        return False
    repo.refresh_timestamp()
    release_broker.push(repo, broker_url, topics=Topics(settings.fleet))
    return True


def check_published(settings: Settings, name: str, version: str) -> None:
    """Refuse to roll out a version the local repository does not hold (when there is one here).
    Raises UsageError."""
    if not (settings.repo_dir / "metadata").is_dir():
        return  # the repository lives elsewhere: the devices will say if it is missing
    try:
        from edgeml.release.repo import Repository

        versions = [r.get("version") for r in Repository(settings).releases(name)]
    except Exception as exc:  # noqa: BLE001 - an unreadable repository is not this command's to judge
        log.debug("cannot list releases: %s", exc)
        return
    if version not in versions:
        raise UsageError(
            f"{name} {version} is not published in {settings.repo_dir}"
            + (f" (published: {', '.join(str(v) for v in versions)})" if versions else ""),
            hint=f"publish it first (`edgeml publish ... --name {name} --version {version}`) or check "
            f"`edgeml releases ls {name}`",
        )


class Controller:
    """Run the fleet side for one fleet. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        broker_url: Optional[str] = None,
        store_url: Optional[str] = None,
        *,
        http_port: Optional[int] = DEFAULT_HTTP_PORT,
        http_host: str = "127.0.0.1",
        tick_interval: float = 1.0,
        alert_interval: float = 10.0,
        baseline_s: float = 300.0,
        share_group: Optional[str] = None,
        alert_rules: Optional[Sequence[AlertRule]] = None,
        manifest_lookup: Optional[Callable[[str, str], Optional[ModelManifest]]] = None,
        refresh_timestamp: bool = True,
        store_prefix: str = "",
        collect_only: bool = False,
    ) -> None:
        self.settings = settings
        self.broker_url = broker_url or settings.broker
        self.store_url = store_url or settings.store_url
        self.topics = Topics(settings.fleet)
        self.http_port = http_port
        self.http_host = http_host
        self.tick_interval = tick_interval
        self.alert_interval = alert_interval
        self.share_group = share_group
        self.refresh_timestamp = refresh_timestamp
        self.collect_only = collect_only
        self.store = Store(self.store_url, prefix=store_prefix)
        self.manifest_lookup = manifest_lookup or release_manifest_lookup(settings)
        self.collector: Optional[Collector] = None
        self.engine = Engine(self.store, self._publish_desired, self.manifest_lookup, baseline_s=baseline_s)
        rules = list(alert_rules) if alert_rules is not None else load_rules(settings.section("fleet"))
        self.alerts = AlertEvaluator(self.store, rules, self._halt_for_alert, self.manifest_lookup)
        self.http: Optional[FleetHTTPServer] = None
        self.drift_cache = views.DriftCache(self.store, self.manifest_lookup)
        self.series_cache = views.SeriesCache(self.store, reference=self.drift_cache.reference)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._tick_lock = threading.Lock()
        self.ticks = 0
        self.last_tick_s = 0.0
        self.started_at = 0.0
        self._last_refresh_check = 0.0
        self.refresh_check_s = 60.0
        self._connects_seen = 0

    # lifecycle ---------------------------------------------------------------------------------
    def start(self, wait: float = 10.0) -> Controller:
        """Connect, start collecting, driving rollouts and serving HTTP. Raises FleetError."""
        self.started_at = time.time()
        self.collector = Collector(self.store, self.broker_url, self.topics, share_group=self.share_group)
        self.collector.start(wait)
        if self.collect_only:
            log.info("collector only for fleet %s: broker %s, store %s", self.settings.fleet, self.broker_url,
                     self.store.dialect)
            return self
        if self.http_port is not None:
            self.http = FleetHTTPServer(self, self.http_host, self.http_port)
            self.http.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-engine", daemon=True)
        self._thread.start()
        log.info("controller for fleet %s: broker %s, store %s%s", self.settings.fleet, self.broker_url,
                 self.store.dialect, f", http {self.http.url}" if self.http else "")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        if self.http:
            self.http.stop()
            self.http = None
        if self.collector:
            self.collector.stop()
        self.store.close()

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> Optional[str]:
        return self.http.url if self.http else None

    def _run(self) -> None:
        last_alert = 0.0
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.tick()
                if time.monotonic() - last_alert >= self.alert_interval:
                    last_alert = time.monotonic()
                    self.alerts.evaluate()
                self._maybe_refresh_timestamp()
            except EdgemlError as exc:
                log.error("controller tick: %s", exc.message)
            except Exception:  # noqa: BLE001 - keep driving; the next tick retries
                log.exception("controller tick failed")
            self._stop.wait(max(0.0, self.tick_interval - (time.monotonic() - t0)))

    def tick(self) -> None:
        """One engine step (the background thread calls it every ``tick_interval``)."""
        with self._tick_lock:
            t0 = time.perf_counter()
            connects = self.collector.link.connects if self.collector else 0
            republish = connects > self._connects_seen > 0  # reconnected: the broker may have lost retained state
            self._connects_seen = connects
            self.engine.tick(republish=republish)
            self.last_tick_s = time.perf_counter() - t0
            self.ticks += 1

    # MQTT out ----------------------------------------------------------------------------------
    def _publish_desired(self, device_id: str, desired: DesiredState) -> None:
        assert self.collector is not None
        info = self.collector.link.publish(self.topics.desired(device_id), desired.to_json(), qos=1, retain=True)
        if info.rc != 0:
            raise RuntimeError(f"publish failed with rc={info.rc}")

    def _halt_for_alert(self, model: str, version: str, reason: str) -> None:
        for r in self.store.rollouts(model=model, states=ACTIVE):
            if r.version == version:
                log.warning("auto_rollback: halting rollout %s (%s)", r.id, reason)
                self.engine.halt(r.id, reason)

    def _maybe_refresh_timestamp(self) -> None:
        """Re-sign the repository's timestamp before it expires when the online key is here."""
        if not self.refresh_timestamp or time.monotonic() - self._last_refresh_check < self.refresh_check_s:
            return
        self._last_refresh_check = time.monotonic()
        try:
            if refresh_timestamp_if_due(self.settings, self.broker_url):
                log.info("re-signed the repository timestamp and pushed it to the broker")
        except EdgemlError as exc:
            log.warning("timestamp refresh failed: %s", exc.message)

    # operator API ------------------------------------------------------------------------------
    def start_rollout(self, model: str, version: str, **options: Any) -> dict[str, Any]:
        """Create a rollout; the engine drives it from the next tick. Returns its status.
        Raises UsageError for bad options and FleetError when the model already has an active one."""
        check_published(self.settings, model, version)
        r = self.engine.start_rollout(model, version, **options)
        if self.collector is not None:
            self.tick()
        return self.rollout_status(r.id)

    def command(self, ref: str, command: str) -> dict[str, Any]:
        """pause/resume/abort/promote a rollout (by id or model name), applied at once."""
        r, _ = queue_command(self.store, ref, command)
        if self.collector is not None:
            self.tick()
        return self.rollout_status(r.id)

    def rollout_status(self, ref: str) -> dict[str, Any]:
        """Status of a rollout by id or model name (the newest). Raises FleetError when none matches."""
        return self.engine.status(self.store.find_rollout(ref))

    def rollouts(self) -> list[dict[str, Any]]:
        devices = self.store.device_views()
        return [self.engine.status(r, devices) for r in self.store.rollouts()]

    def fleet(self) -> list[dict[str, Any]]:
        return views.fleet_devices(self.store, drift=self.drift_cache)

    def series(self, since_s: float = 600.0) -> list[dict[str, Any]]:
        return self.series_cache.series(since_s)

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        return views.events(self.store, limit)

    def metrics(self) -> str:
        extra: dict[str, float] = {"controller_ticks_total": self.ticks,
                                   "controller_last_tick_seconds": self.last_tick_s}
        try:
            import psutil

            extra["controller_rss_bytes"] = psutil.Process().memory_info().rss
        except ImportError:
            pass
        stats = self.collector.stats.to_dict() if self.collector else {}
        return views.prometheus(self.fleet(), self.rollouts(), stats, extra)
