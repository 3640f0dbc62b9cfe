"""Helpers for release tests: a tiny model variant, a device folder provisioned with the root,
and raw access to the broker for the attacker's side."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.protocol.manifest import ModelManifest, TensorSpec
from device_agent.protocol.topics import Topics
from device_agent.updater import Updater, UpdaterConfig
from edgeml.settings import Settings, load_settings


def make_variant(folder: Path, name: str = "tiny", size: int = 200_000, seed: int = 0) -> Path:
    """A model-like file with its manifest beside it (``<stem>.manifest.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}-fp32.tflite"
    model.write_bytes(bytes((i * 7 + seed) % 251 for i in range(size)) if size < 4096 else _pseudo(size, seed))
    manifest = ModelManifest(
        name=name,
        version="0.0.0",
        filename=model.name,
        inputs=[TensorSpec("x", [-1, 4])],
        outputs=[TensorSpec("y", [-1, 3])],
        labels=["a", "b", "c"],
        metrics={"accuracy": 0.9},
    )
    (folder / f"{model.stem}.manifest.json").write_text(json.dumps(manifest.to_dict()))
    return model


def _pseudo(size: int, seed: int) -> bytes:
    import hashlib

    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def host_settings(home: Path, broker_url: str, fleet: str = "default", toml: str = "") -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    if toml:
        (home / "edgeml.toml").write_text(toml)
    return load_settings(home, env={}, broker=broker_url, fleet=fleet)


def provision(settings: Settings, device_dir: Path) -> Path:
    """Copy the repository's current root into a device metadata folder."""
    meta = device_dir / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(settings.repo_dir / "metadata" / "root.json", meta / "root.json")
    return meta


def updater(meta: Path, broker_url: str, fleet: str = "default", **cfg: Any) -> Updater:
    config = UpdaterConfig(**{"request_timeout": 5.0, "connect_timeout": 5.0, "reconnect_timeout": 5.0, **cfg})
    return Updater(meta, broker_url, Topics(fleet), config=config)


class Raw:
    """The attacker (or a test) writing retained messages directly."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{os.getpid()}-{id(self)}")
        self.client.connect(host, port)
        self.client.loop_start()

    def put(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    def get(self, topic: str, timeout: float = 3.0) -> Optional[bytes]:
        got: list[bytes] = []
        ev = threading.Event()

        def on_message(c: Any, u: Any, m: Any) -> None:
            if m.topic == topic:
                got.append(bytes(m.payload))
                ev.set()

        self.client.on_message = on_message
        self.client.subscribe(topic, qos=0)
        ev.wait(timeout)
        self.client.unsubscribe(topic)
        return got[0] if got else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file (not cache) under ``folder`` with its bytes: 'the device kept what it had'."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "chunk-cache" not in p.parts:
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def forge(
    settings: Settings,
    raw: Raw,
    topics: Topics,
    targets_signers: list[Any],
    snapshot_signers: list[Any],
    timestamp_signers: list[Any],
    add: Optional[tuple[str, bytes]] = None,
) -> None:
    """Push a new consistent set of targets/snapshot/timestamp built with the given signers —
    what an attacker who holds (some) keys, or none, can put on the broker."""
    from tuf.api.metadata import Metadata, MetaFile, TargetFile
    from tuf.api.serialization.json import JSONSerializer

    from device_agent.updater import chunks
    from device_agent.updater.updater import encode_manifest

    meta = settings.repo_dir / "metadata"
    ser = JSONSerializer(compact=True)

    def signed(md: Any, signers: list[Any]) -> bytes:
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)
        return bytes(md.to_bytes(ser))

    targets = Metadata.from_bytes((meta / "targets.json").read_bytes())
    targets.signed.version += 1
    if add is not None:
        path, data = add
        name, version, filename = path.split("/")[1:]
        manifest = ModelManifest(
            name=name,
            version=version,
            filename=filename,
            inputs=[TensorSpec("x", [-1, 4])],
            outputs=[TensorSpec("y", [-1, 3])],
        )
        info = TargetFile.from_data(path, data, ["sha256"])
        info.unrecognized_fields["custom"] = {"edgeml": encode_manifest(manifest)}
        targets.signed.targets[path] = info
        index, blobs = chunks.split(data)
        for digest, blob in blobs.items():
            raw.put(topics.repo_chunk(digest), blob)
        raw.put(topics.repo_target_index(path), index.to_json())
    tb = signed(targets, targets_signers)
    snapshot = Metadata.from_bytes((meta / "snapshot.json").read_bytes())
    snapshot.signed.version += 1
    snapshot.signed.meta["targets.json"] = MetaFile.from_data(targets.signed.version, tb, ["sha256"])
    sb = signed(snapshot, snapshot_signers)
    timestamp = Metadata.from_bytes((meta / "timestamp.json").read_bytes())
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = MetaFile.from_data(snapshot.signed.version, sb, ["sha256"])
    raw.put(topics.repo_metadata(f"{targets.signed.version}.targets.json"), tb)
    raw.put(topics.repo_metadata(f"{snapshot.signed.version}.snapshot.json"), sb)
    raw.put(topics.repo_metadata("timestamp.json"), signed(timestamp, timestamp_signers))


def role_signers(settings: Settings, role: str) -> list[Any]:
    """The workstation's signers for ``role`` (as a thief of those key files would have)."""
    from edgeml.release.repo import Repository

    repo = Repository(settings)
    return repo.signers_for(role, repo.root())
