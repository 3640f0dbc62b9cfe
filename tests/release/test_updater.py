"""The device updater against a real Mosquitto: verified fetch, versions, resume after a broker
outage, and a device that was offline across two root rotations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from device_agent.updater import BrokerUnavailableError, OlderVersionError, Updater
from edgeml.release.keys import rotate_key
from edgeml.release.publish import push_repo
from tests.release.conftest import Env


def test_fetch_is_verified_and_byte_identical(env: Env) -> None:
    pub = env.publish("1.0.0", size=300_000)
    up = env.updater()
    up.refresh()
    rel = up.newest("tiny")
    assert rel is not None and rel.version == "1.0.0" and rel.length == 300_000
    assert rel.manifest.name == "tiny" and rel.manifest.version == "1.0.0"
    assert rel.manifest.labels == ["a", "b", "c"] and rel.manifest.metrics["accuracy"] == 0.9
    seen: list[tuple[int, int]] = []
    dest = up.download(rel, env.tmp / "slot" / rel.manifest.filename, progress=lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == pub["model"].read_bytes()
    assert seen[-1] == (300_000, 300_000)
    assert [p.name for p in dest.parent.iterdir()] == [dest.name], "no temp files left beside the model"
    assert up.fetcher.stats.chunks_fetched == 5  # 300 000 bytes in 64 KiB chunks


def test_releases_are_ordered_and_older_is_refused(env: Env) -> None:
    env.publish("1.0.0")
    env.publish("1.10.0", seed=1)
    up = env.updater()
    rels = up.releases("tiny")
    assert [r.version for r in rels] == ["1.0.0", "1.10.0"]
    assert up.is_newer(rels[1], "1.9.0") and not up.is_newer(rels[0], "1.0.0")
    with pytest.raises(OlderVersionError):
        up.download(rels[0], env.tmp / "x.tflite", installed="1.10.0")
    assert not (env.tmp / "x.tflite").exists()


@pytest.mark.slow
def test_resume_after_broker_restart_mid_download(env: Env) -> None:
    pub = env.publish("1.0.0", size=1_200_000)  # 19 chunks, windows of 4
    up = env.updater(window=4, reconnect_timeout=20.0)
    up.refresh()
    rel = up.release("tiny", "1.0.0")
    stopped = threading.Event()

    def progress(done: int, total: int) -> None:
        if not stopped.is_set():
            stopped.set()
            env.broker.stop()  # mid-download: 4 chunks are in, 15 to go
            threading.Timer(1.0, env.broker.start).start()

    dest = up.download(rel, env.tmp / "slot" / "m.tflite", progress=progress)
    assert stopped.is_set()
    assert dest.read_bytes() == pub["model"].read_bytes()
    assert up.fetcher.stats.chunks_fetched == 19, "chunks fetched before the outage are not fetched again"


@pytest.mark.slow
def test_broker_down_raises_transport_error_then_resumes_from_cache(env: Env) -> None:
    pub = env.publish("1.0.0", size=600_000)  # 10 chunks
    up = env.updater(window=4, reconnect_timeout=3.0)
    up.refresh()
    rel = up.release("tiny", "1.0.0")
    dest = env.tmp / "slot" / "m.tflite"

    def progress(done: int, total: int) -> None:
        env.broker.stop()

    with pytest.raises(BrokerUnavailableError) as info:
        up.download(rel, dest, progress=progress)
    assert "unreachable" in info.value.message and info.value.hint
    assert not dest.exists()
    assert up.fetcher.stats.chunks_fetched == 4
    env.broker.start()
    up.download(rel, dest)
    assert dest.read_bytes() == pub["model"].read_bytes()
    assert up.fetcher.stats.chunks_fetched == 10 and up.fetcher.stats.chunks_from_cache == 4


def test_device_offline_across_two_root_rotations_still_updates(env: Env) -> None:
    device_root = (env.meta / "root.json").read_bytes()
    rotate_key(env.settings, "root")
    rotate_key(env.settings, "timestamp")
    rotate_key(env.settings, "root")
    pub = env.publish("2.0.0")
    assert (env.meta / "root.json").read_bytes() == device_root  # the device still trusts root v1
    up = env.updater()
    up.refresh()
    assert up.trusted_root_version == 4
    rel = up.release("tiny", "2.0.0")
    assert up.download(rel, env.tmp / "m.tflite").read_bytes() == pub["model"].read_bytes()


def test_missing_trusted_root_is_a_config_error(env: Env, tmp_path: Path) -> None:
    from device_agent.errors import ConfigError

    push_repo(env.settings)
    with pytest.raises(ConfigError, match="no trusted root"):
        Updater(tmp_path / "empty", env.broker.url)
    up = Updater(tmp_path / "fresh", env.broker.url, trusted_root=env.settings.repo_dir / "metadata" / "root.json")
    env.updaters.append(up)
    up.refresh()
    assert up.trusted_root_version == 1


def test_expiry_warnings_and_resign_root(env: Env) -> None:
    from datetime import datetime, timedelta, timezone

    from edgeml.release.repo import Repository

    later = Repository(env.settings, now=datetime.now(timezone.utc) + timedelta(days=340))
    warnings = later.status()["warnings"]
    assert any(w.startswith("root metadata expires in") and "resign root" in w for w in warnings)
    assert any(w.startswith("targets metadata") for w in warnings)
    status = later.resign("root")  # re-signed when the warning shows up
    assert status["root"]["version"] == 2
    assert not any(w.startswith("root") for w in status["warnings"])
    pub = env.publish("1.0.0")
    up = env.updater()
    up.refresh()
    assert up.trusted_root_version == 2
    assert up.download(up.release("tiny", "1.0.0"), env.tmp / "m").read_bytes() == pub["model"].read_bytes()
