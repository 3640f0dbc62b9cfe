"""Pushing the repository to the broker as retained messages.

Metadata goes to ``repo/metadata/<file>``; each target to a chunk index at
``repo/targets/<target path>`` plus content-addressed chunks ``repo/chunks/<sha256>`` (see
:mod:`device_agent.updater.chunks`). A record of what each broker already holds
(``repository/.pushed/<broker+fleet>.json``) keeps a publish from re-sending old chunks;
``everything=True`` re-sends all; so does a push that finds the broker no longer holds the
timestamp it last pushed (the broker lost its retained store). What this workstation pushed and
the repository no longer needs (old snapshot/targets versions, chunks of removed releases) is
deleted from the broker after the new state is in.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.errors import AgentError
from device_agent.fsutil import atomic_write_bytes
from device_agent.protocol.broker import BrokerURL
from device_agent.protocol.topics import Topics
from device_agent.updater import chunks
from device_agent.updater.mqtt import RetainedReader
from edgeml.errors import ReleaseError
from edgeml.release.repo import Repository

Progress = Callable[[int, int], None]


def planned_messages(repo: Repository, topics: Topics, chunk_bytes: int) -> Iterator[tuple[str, bytes]]:
    """Every (topic, payload) the broker should retain for ``repo``: targets first, metadata
    last (timestamp at the very end), so a device never sees metadata before its chunks."""
    for path in sorted(repo.targets().targets):
        data = repo.target_file(path).read_bytes()
        index, blobs = chunks.split(data, chunk_bytes)
        for digest, blob in blobs.items():
            yield topics.repo_chunk(digest), blob
        yield topics.repo_target_index(path), index.to_json()
    for file in repo.metadata_files():
        yield topics.repo_metadata(file.name), file.read_bytes()


def _record_path(repo: Repository, url: BrokerURL, topics: Topics) -> Path:
    key = hashlib.sha256(f"{url.host}:{url.port}/{topics.root}".encode()).hexdigest()[:16]
    return repo.dir / ".pushed" / f"{key}.json"


def push(
    repo: Repository,
    broker: BrokerURL | str,
    topics: Optional[Topics] = None,
    everything: bool = False,
    chunk_bytes: int = chunks.DEFAULT_CHUNK_BYTES,
    progress: Optional[Progress] = None,
    timeout: float = 30.0,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Publish ``repo`` to ``broker`` as retained QoS 1 messages; return counts and bytes.

    Raises ReleaseError when the broker cannot be reached or does not acknowledge in time (the
    local repository is complete either way: push again later).
    """
    url = broker if isinstance(broker, BrokerURL) else BrokerURL.parse(broker)
    topics = topics or repo.topics
    record_file = _record_path(repo, url, topics)
    record: dict[str, str] = {}
    if not everything and record_file.is_file():
        try:
            record = json.loads(record_file.read_text())
        except ValueError:
            record = {}
    stale = False
    if record and not dry_run:
        # the record is only as good as the broker's memory: if it no longer holds the timestamp we
        # last pushed (restarted without persistence, retained store wiped), send everything again
        ts_topic = topics.repo_metadata("timestamp.json")
        held = _retained(url, topics, ts_topic, timeout)
        if held is None or hashlib.sha256(held).hexdigest() != record.get(ts_topic):
            record, stale = {}, True
    todo = []
    skipped = 0
    planned: set[str] = set()
    for topic, payload in planned_messages(repo, topics, chunk_bytes):
        planned.add(topic)
        digest = hashlib.sha256(payload).hexdigest()
        if record.get(topic) == digest:
            skipped += 1
            continue
        todo.append((topic, payload, digest))
    prune = _prunable(repo, topics, record, planned)
    summary = {
        "broker": str(url),
        "topic_root": topics.repo,
        "messages": len(todo),
        "bytes": sum(len(p) for _, p, _ in todo),
        "skipped": skipped,
        "resent_all": stale,
        "pruned": len(prune),
    }
    if dry_run or not (todo or prune):
        return summary
    client = _connect(url, timeout)
    try:
        total = len(todo)
        for i, (topic, payload, digest) in enumerate(todo, 1):
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise ReleaseError(
                    f"broker {url} did not acknowledge {topic} within {timeout:.0f}s",
                    hint="the local repository is complete; run `edgeml repo push` when the broker is healthy",
                )
            record[topic] = digest
            if progress is not None:
                progress(i, total)
        for topic in prune:  # an empty retained message deletes it (only after the new set is in)
            info = client.publish(topic, b"", qos=1, retain=True)
            info.wait_for_publish(timeout)
            if info.is_published():
                record.pop(topic, None)
    finally:
        atomic_write_bytes(record_file, json.dumps(record, indent=0, sort_keys=True).encode())
        client.disconnect()
        client.loop_stop()
    return summary


def _prunable(repo: Repository, topics: Topics, record: dict[str, str], planned: set[str]) -> list[str]:
    """Topics this workstation pushed earlier that the repository no longer needs on the broker:
    chunks and indexes of removed releases, and snapshot/targets metadata older than the previous
    version (the previous one stays for devices in the middle of a refresh). Root versions stay."""
    keep: set[str] = set()
    for role in ("snapshot", "targets"):
        version = repo.open(role).signed.version
        keep.add(topics.repo_metadata(f"{version - 1}.{role}.json"))
    out = []
    for topic in record:
        if topic in planned or topic in keep or topic.endswith(".root.json"):
            continue
        out.append(topic)
    return sorted(out)


def _retained(url: BrokerURL, topics: Topics, topic: str, timeout: float) -> Optional[bytes]:
    """What the broker retains at ``topic`` (None: nothing). Raises ReleaseError if unreachable."""
    reader = RetainedReader(url, topics, connect_timeout=timeout, request_timeout=timeout, reconnect_timeout=timeout)
    try:
        return reader.get(topic, 1 << 20)
    except AgentError as exc:
        raise ReleaseError(
            f"cannot reach broker {url}: {exc.message}",
            hint="the release is saved locally; start the broker (or fix --broker) and run `edgeml repo push`",
        ) from exc
    finally:
        reader.close()


def _connect(url: BrokerURL, timeout: float) -> mqtt.Client:
    connected = threading.Event()
    failure: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgeml-publisher-{time.monotonic_ns()}")
    client.max_inflight_messages_set(64)
    if url.username:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set()

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if getattr(rc, "is_failure", False):
            failure.append(str(rc))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(url.host, url.port, keepalive=30)
    except OSError as exc:
        raise ReleaseError(
            f"cannot reach broker {url}: {exc}",
            hint="the release is saved locally; start the broker (or fix --broker) and run `edgeml repo push`",
        ) from exc
    client.loop_start()
    if not connected.wait(timeout) or failure:
        client.loop_stop()
        raise ReleaseError(
            f"broker {url} refused or did not answer the connection ({', '.join(failure) or 'timeout'})",
            hint="check the broker URL and credentials; the release is saved locally: `edgeml repo push` later",
        )
    return client
