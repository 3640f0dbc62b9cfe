"""Attacks that must be refused, each against a real Mosquitto. In every case the device keeps
what it had: its trusted metadata and its installed model stay byte for byte, nothing new is
written where the model would go, and the error says which kind of failure it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from device_agent.errors import DataError
from device_agent.updater import (
    IntegrityError,
    MalformedError,
    MetadataExpiredError,
    OlderVersionError,
    OversizeError,
    RollbackError,
    UntrustedMetadataError,
    Updater,
)
from device_agent.updater.chunks import split
from edgeml.release.publish import push_repo
from edgeml.release.repo import Repository
from tests.release.conftest import Env
from tests.release.helpers import forge, role_signers, tree_snapshot


@dataclass
class Device:
    """A device that installed tiny 1.0.0 legitimately; the repository then got 2.0.0."""

    meta: Path
    installed: Path
    installed_bytes: bytes
    slot: Path

    def kept(self, before: dict[str, bytes]) -> None:
        assert tree_snapshot(self.meta) == before, "trusted metadata changed"
        assert self.installed.read_bytes() == self.installed_bytes
        assert not self.slot.exists(), "a refused update wrote a model"
        assert not [p for p in self.slot.parent.iterdir() if p != self.installed], "leftover files"


@pytest.fixture
def device(env: Env) -> Iterator[Device]:
    pub = env.publish("1.0.0", size=100_000)
    up = env.updater()
    installed = up.download(up.release("tiny", "1.0.0"), env.tmp / "slots" / "installed.tflite")
    assert installed.read_bytes() == pub["model"].read_bytes()
    up.close()
    yield Device(env.meta, installed, installed.read_bytes(), env.tmp / "slots" / "new.tflite")


def attempt(env: Env, device: Device, version: str = "2.0.0", **cfg: object) -> None:
    """Refresh and try to install ``version`` into the device's new slot."""
    up = env.updater(**cfg)
    up.refresh()
    up.download(up.release("tiny", version), device.slot, installed="1.0.0")


def test_tampered_chunk_is_refused(env: Env, device: Device) -> None:
    env.publish("2.0.0", size=200_000, seed=1)
    index = json.loads(env.raw.get(env.topics.repo_target_index("models/tiny/2.0.0/tiny-fp32.tflite")) or b"")
    digest = index["chunks"][1][0]
    good = env.raw.get(env.topics.repo_chunk(digest)) or b""
    env.raw.put(env.topics.repo_chunk(digest), bytes([good[0] ^ 1]) + good[1:])
    before = tree_snapshot(device.meta)
    with pytest.raises(IntegrityError, match="does not match its address"):
        attempt(env, device)
    # refresh itself was legitimate (new metadata is fine); the model is what was refused
    assert tree_snapshot(device.meta)["timestamp.json"] != before["timestamp.json"]
    assert not device.slot.exists()
    assert device.installed.read_bytes() == device.installed_bytes


def test_target_hash_mismatch_is_refused(env: Env, device: Device) -> None:
    env.publish("2.0.0", size=200_000, seed=1)
    evil = b"E" * 200_000  # same length, other bytes: every chunk is self-consistent
    index, blobs = split(evil)
    for digest, blob in blobs.items():
        env.raw.put(env.topics.repo_chunk(digest), blob)
    env.raw.put(env.topics.repo_target_index("models/tiny/2.0.0/tiny-fp32.tflite"), index.to_json())
    with pytest.raises(IntegrityError, match="hash"):
        attempt(env, device)
    assert not device.slot.exists()
    assert device.installed.read_bytes() == device.installed_bytes


def test_metadata_signed_by_untrusted_key_is_refused(env: Env, device: Device) -> None:
    mallory = CryptoSigner.generate_ed25519()
    before = tree_snapshot(device.meta)
    forge(
        env.settings, env.raw, env.topics, [mallory], [mallory], [mallory], add=("models/tiny/2.0.0/x.tflite", b"evil")
    )
    with pytest.raises(UntrustedMetadataError):
        attempt(env, device)
    device.kept(before)


@pytest.mark.thresholds(1, 2)
def test_threshold_not_met_is_refused(env: Env, device: Device) -> None:
    assert len(role_signers(env.settings, "targets")) == 2
    stolen_one = role_signers(env.settings, "targets")[:1]  # one of the two targets keys
    before = tree_snapshot(device.meta)
    forge(
        env.settings,
        env.raw,
        env.topics,
        stolen_one,
        role_signers(env.settings, "snapshot"),
        role_signers(env.settings, "timestamp"),
        add=("models/tiny/2.0.0/x.tflite", b"evil"),
    )
    with pytest.raises(UntrustedMetadataError, match="targets"):
        attempt(env, device)
    # timestamp and snapshot were validly signed and may advance; targets must not
    assert tree_snapshot(device.meta)["targets.json"] == before["targets.json"]
    assert not device.slot.exists()


def test_metadata_rollback_is_refused(env: Env, device: Device) -> None:
    topic = env.topics.repo_metadata("timestamp.json")
    old_timestamp = env.raw.get(topic)
    env.publish("2.0.0", seed=1)
    up = env.updater()
    up.refresh()  # the device sees timestamp v3
    before = tree_snapshot(device.meta)
    assert old_timestamp is not None
    env.raw.put(topic, old_timestamp)  # replay the validly signed v2
    with pytest.raises(RollbackError):
        attempt(env, device)
    device.kept(before)


def test_expired_timestamp_is_refused(env: Env, device: Device) -> None:
    # a validly signed timestamp that has expired: what a freeze attacker keeps serving
    past = datetime.now(timezone.utc) - timedelta(days=3)
    Repository(env.settings, now=past).do_timestamp(force=True)
    push_repo(env.settings)
    before = tree_snapshot(device.meta)
    with pytest.raises(MetadataExpiredError, match="expired"):
        attempt(env, device, version="1.0.0")
    device.kept(before)


@pytest.mark.parametrize("role", ["snapshot", "targets"])
def test_snapshot_targets_mix_and_match_is_refused(env: Env, device: Device, role: str) -> None:
    meta = env.settings.repo_dir / "metadata"
    old_version = Repository(env.settings).open(role).signed.version
    old = (meta / f"{old_version}.{role}.json").read_bytes()
    env.publish("2.0.0", seed=1)
    new_version = Repository(env.settings).open(role).signed.version
    # serve the old (validly signed) file where the new one belongs
    env.raw.put(env.topics.repo_metadata(f"{new_version}.{role}.json"), old)
    before = tree_snapshot(device.meta)
    with pytest.raises((IntegrityError, RollbackError)) as info:
        attempt(env, device)
    assert "length or hash mismatch" in info.value.message or "version" in info.value.message
    assert tree_snapshot(device.meta).get(f"{role}.json") == before.get(f"{role}.json")
    assert not device.slot.exists()


def test_endless_metadata_is_refused(env: Env, device: Device) -> None:
    before = tree_snapshot(device.meta)
    env.raw.put(env.topics.repo_metadata("timestamp.json"), b"{" + b" " * 2_000_000 + b"}")
    with pytest.raises(OversizeError, match="limit"):
        attempt(env, device)
    device.kept(before)
    env.raw.put(env.topics.repo_metadata("2.root.json"), b"x" * 600_000)  # over root_max_bytes
    with pytest.raises(OversizeError):
        attempt(env, device)
    device.kept(before)


def test_endless_target_is_refused(env: Env, device: Device) -> None:
    env.publish("2.0.0", size=200_000, seed=1)
    path = "models/tiny/2.0.0/tiny-fp32.tflite"
    index, blobs = split(b"A" * 1_000_000)  # more bytes than the signed 200 000
    for digest, blob in blobs.items():
        env.raw.put(env.topics.repo_chunk(digest), blob)
    env.raw.put(env.topics.repo_target_index(path), index.to_json())
    with pytest.raises(OversizeError, match="signed length"):
        attempt(env, device)
    assert not device.slot.exists()
    # and a device capped below the signed length refuses before fetching a byte
    with pytest.raises(OversizeError, match="limit"):
        attempt(env, device, max_target_bytes=100_000)
    assert not device.slot.exists()


@pytest.mark.parametrize("where", ["timestamp", "index"])
def test_malformed_json_is_refused(env: Env, device: Device, where: str) -> None:
    if where == "timestamp":
        before = tree_snapshot(device.meta)
        env.raw.put(env.topics.repo_metadata("timestamp.json"), b'{"signed": {"_type": "timestamp", "version": ')
        with pytest.raises(MalformedError):
            attempt(env, device)
        device.kept(before)
    else:
        env.publish("2.0.0", seed=1)
        env.raw.put(env.topics.repo_target_index("models/tiny/2.0.0/tiny-fp32.tflite"), b"[not json")
        with pytest.raises(MalformedError, match="not valid JSON"):
            attempt(env, device)
        assert not device.slot.exists()


def test_older_model_version_is_refused(env: Env, device: Device) -> None:
    # the installed version is 1.0.0; the repository (legitimately) offers only 1.0.0 and 0.9
    # cannot be published; a device told to install 1.0.0 over 1.0.0 refuses
    before = tree_snapshot(device.meta)
    with pytest.raises(OlderVersionError, match="not newer"):
        attempt(env, device, version="1.0.0")
    assert not device.slot.exists()
    up: Updater = env.updaters[-1]
    rel = up.release("tiny", "1.0.0")
    assert not up.is_newer(rel, "1.0.0") and not up.is_newer(rel, "1.2")
    with pytest.raises(OlderVersionError):
        up.download(rel, device.slot, installed="2.0.0")
    device.kept(before)


def test_every_refusal_is_a_data_error_with_a_hint() -> None:
    for cls in (
        IntegrityError,
        MalformedError,
        MetadataExpiredError,
        OlderVersionError,
        OversizeError,
        RollbackError,
        UntrustedMetadataError,
    ):
        assert issubclass(cls, DataError)


def test_device_caps_hold_even_when_signed_lengths_are_larger(env: Env, device: Device) -> None:
    # snapshot signs the targets metadata length; a device still refuses more than its own cap
    env.publish("2.0.0", seed=1)
    before = tree_snapshot(device.meta)
    with pytest.raises(OversizeError, match="limit"):
        attempt(env, device, targets_max_bytes=1000)
    assert tree_snapshot(device.meta)["targets.json"] == before["targets.json"]
    assert not device.slot.exists()
