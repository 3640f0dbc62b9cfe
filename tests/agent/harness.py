"""Integration harness: a real signed repository published to a real Mosquitto, and an MQTT
watcher that records what devices report."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.protocol.messages import DesiredState, Event, ReportedState, Telemetry
from device_agent.protocol.topics import Topics, topic_matches
from tests.agent.modelkit import make_manifest, write_manifest

FLEET = "test"


class Publisher:
    """The workstation side: keys, a TUF repository, ``edgeml.release.publish`` to the broker."""

    def __init__(
        self,
        home: Path,
        broker_url: str,
        models: dict[str, Path],
        name: str = "tiny",
        chunk_bytes: int = 16384,
        fleet: str = FLEET,
    ) -> None:
        from edgeml.release.keys import init_keys
        from edgeml.settings import load_settings

        home.mkdir(parents=True, exist_ok=True)
        (home / "edgeml.toml").write_text(f"[release]\nchunk_bytes = {chunk_bytes}\n")
        self.settings = load_settings(home, env={}, broker=broker_url, fleet=fleet)
        init_keys(self.settings)
        self.home = home
        self.models = models
        self.name = name

    @property
    def root(self) -> Path:
        return self.settings.repo_dir / "metadata" / "root.json"

    def variant(self, model: str, version: str, **manifest_kw: Any) -> Path:
        folder = self.home / "variants" / version
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.tflite"
        shutil.copyfile(self.models[model], path)
        write_manifest(path, make_manifest(path, name=self.name, version=version, **manifest_kw))
        return path

    def publish(self, model: str, version: str, **manifest_kw: Any) -> dict[str, Any]:
        from edgeml.release.publish import publish

        return publish(self.settings, self.variant(model, version, **manifest_kw), name=self.name, version=version)


class Watcher:
    """Subscribes to every device topic of the fleet and keeps what arrives."""

    def __init__(self, host: str, port: int, fleet: str = FLEET, persistent: bool = False) -> None:
        self.topics = Topics(fleet)
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subs = [self.topics.all_devices(k) for k in ("state", "events", "telemetry")]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watch-{os.getpid()}-{id(self)}", clean_session=not persistent
        )
        self.client.on_connect = lambda c, *_: [c.subscribe(s, qos=1) for s in self.subs]
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if any(topic_matches(s, msg.topic) for s in self.subs):
            with self.lock:
                self.messages.append((msg.topic, bytes(msg.payload)))

    def of(self, kind: str) -> list[Any]:
        cls = {"state": ReportedState, "events": Event, "telemetry": Telemetry}[kind]
        with self.lock:
            items = [p for t, p in self.messages if t.endswith("/" + kind) and p]
        return [cls.from_json(p) for p in items]

    def events(self) -> list[Event]:
        return self.of("events")

    def wait_for(self, pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; events: {[(e.event, e.reason) for e in self.events()]}"
        )

    def set_desired(self, device_id: str, version: str, model: str = "tiny", **kw: Any) -> None:
        d = DesiredState(model=model, version=version, issued_at=time.time(), **kw)
        self.client.publish(self.topics.desired(device_id), d.to_json(), qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(
    pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition", diag: Optional[Callable[[], Any]] = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {diag()}" if diag else ""))


def dump(obj: Any) -> str:
    return json.dumps(obj, default=str)
