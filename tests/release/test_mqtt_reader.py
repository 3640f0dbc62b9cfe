"""The retained-message reader against a real Mosquitto: a missing topic is known at once
(the marker trick), present ones arrive, unsolicited topics are ignored, sizes are capped."""

from __future__ import annotations

import os
import pwd
import time

import pytest

from device_agent.protocol.topics import Topics
from device_agent.updater.errors import BrokerUnavailableError, OversizeError
from device_agent.updater.mqtt import RetainedReader
from tests.brokers import MosquittoBroker
from tests.release.helpers import Raw


def test_missing_topic_is_known_without_waiting(broker: MosquittoBroker) -> None:
    raw = Raw(broker.host, broker.port)
    topics = Topics("t1")
    present = [f"{topics.repo}/chunks/{i:064x}" for i in range(40)]
    for i, t in enumerate(present):
        raw.put(t, bytes([i % 256]) * 65536)
    reader = RetainedReader(broker.url, topics, request_timeout=20)
    try:
        start = time.monotonic()
        got = reader.get_many([*present, f"{topics.repo}/metadata/9.root.json"], 1 << 20)
        elapsed = time.monotonic() - start
        assert got[f"{topics.repo}/metadata/9.root.json"] is None
        assert all(got[t] == bytes([i % 256]) * 65536 for i, t in enumerate(present))
        assert elapsed < 3.0, f"took {elapsed:.2f}s: absence must not cost a timeout"
        start = time.monotonic()
        assert reader.get(f"{topics.repo}/metadata/10.root.json", 1000) is None
        assert time.monotonic() - start < 1.0
    finally:
        reader.close()
        raw.close()


def test_oversized_message_is_refused(broker: MosquittoBroker) -> None:
    raw = Raw(broker.host, broker.port)
    topics = Topics("t2")
    raw.put(topics.repo_metadata("timestamp.json"), b"x" * 100_000)
    reader = RetainedReader(broker.url, topics)
    try:
        with pytest.raises(OversizeError, match="100000 bytes"):
            reader.get(topics.repo_metadata("timestamp.json"), 16384)
    finally:
        reader.close()
        raw.close()


def test_unreachable_broker_is_a_transport_error() -> None:
    reader = RetainedReader("mqtt://127.0.0.1:9", Topics(), connect_timeout=0.5)
    try:
        with pytest.raises(BrokerUnavailableError) as info:
            reader.get("edgeml/default/repo/metadata/timestamp.json", 100)
        assert info.value.hint
    finally:
        reader.close()


class _Msg:
    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic, self.payload = topic, payload


def test_messages_on_topics_not_asked_for_are_ignored() -> None:
    # some brokers (amqtt) deliver retained messages to clients that never subscribed to them
    reader = RetainedReader("mqtt://127.0.0.1:9", Topics())
    reader._wanted = {"edgeml/default/repo/metadata/timestamp.json": 100}
    reader._on_message(None, None, _Msg("edgeml/default/repo/metadata/1.root.json", b"evil"))
    reader._on_message(None, None, _Msg("edgeml/default/repo/metadata/timestamp.json", b"good"))
    reader._on_message(None, None, _Msg(reader.marker_topic, b"stale-nonce"))
    assert reader._got == {"edgeml/default/repo/metadata/timestamp.json": b"good"}
    assert reader._marker_seen is False
    assert reader.stats.messages == 1


def test_marker_order_holds_on_a_broker_with_small_queues(tmp_path: object) -> None:
    # production brokers keep per-client queue limits (Mosquitto: 20 in flight, 1000 queued); QoS 1
    # retained messages beyond them would be dropped or overtaken by the marker; the reader uses QoS 0
    from pathlib import Path

    from tests.brokers import free_port

    port = free_port()
    workdir = Path(str(tmp_path)) / "small-queues"
    conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 5\nmax_queued_messages 10\n"
    b = MosquittoBroker(workdir, port=port, config=conf)
    b.start()
    raw = Raw(b.host, b.port)
    topics = Topics("t3")
    present = [topics.repo_chunk(f"{i:064x}") for i in range(40)]
    try:
        for i, t in enumerate(present):
            raw.put(t, bytes([i]) * 65536)
        reader = RetainedReader(b.url, topics)
        try:
            got = reader.get_many([*present, topics.repo_chunk("f" * 64)], 1 << 20)
            assert got[topics.repo_chunk("f" * 64)] is None
            assert [got[t] == bytes([i]) * 65536 for i, t in enumerate(present)] == [True] * 40
        finally:
            reader.close()
    finally:
        raw.close()
        b.stop()


def test_broker_acl_without_the_probe_topic_gives_an_actionable_error(tmp_path: object) -> None:
    from pathlib import Path

    from tests.brokers import free_port

    port = free_port()
    workdir = Path(str(tmp_path)) / "acl"
    workdir.mkdir()
    (workdir / "acl").write_text("topic read edgeml/default/repo/#\n")  # anonymous: no probe topic
    me = pwd.getpwuid(os.geteuid()).pw_name  # as root, mosquitto would switch user and not read the file
    conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {workdir / 'acl'}\nuser {me}\n"
    b = MosquittoBroker(workdir, port=port, config=conf)
    b.start()
    reader = RetainedReader(b.url, Topics(), request_timeout=1.0)
    try:
        with pytest.raises(BrokerUnavailableError) as info:
            reader.get(Topics().repo_metadata("2.root.json"), 1000)
        assert "no echo on edgeml/default/probe/" in info.value.message and "ACL" in info.value.hint
    finally:
        reader.close()
        b.stop()
