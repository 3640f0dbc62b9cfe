"""The demo's private broker: a real Mosquitto on a free port that carries messages and stops."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgeml.broker_proc import MosquittoProcess, find_mosquitto, start_private_broker, wait_listening
from edgeml.errors import UsageError


def _roundtrip(host: str, port: int) -> bytes:
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        done.set()

    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe("demo/t", qos=1)
        client.publish("demo/t", b"hello", qos=1, retain=True).wait_for_publish(5)
        assert done.wait(5), "no message came back through the broker"
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0]


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed: run `bash .ci/system-deps.sh mosquitto`")
def test_private_mosquitto_carries_messages_and_stops(tmp_path: Path) -> None:
    broker = start_private_broker(tmp_path, prefer="mosquitto")
    try:
        assert broker.kind == "mosquitto"
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert _roundtrip(broker.host, broker.port) == b"hello"
        assert "max_queued_messages 0" in (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
    finally:
        broker.stop()
    assert not wait_listening(broker.host, broker.port, 0.5)


def test_unknown_broker_kind_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown broker kind"):
        start_private_broker(tmp_path, prefer="rabbit")


def test_missing_binary_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="did not start"):
        MosquittoProcess(tmp_path, binary="/bin/false").start(timeout=2)


def test_embedded_broker_carries_messages_and_stops(tmp_path: Path) -> None:
    broker = start_private_broker(tmp_path, prefer="embedded")
    try:
        assert broker.kind == "embedded"
        assert _roundtrip(broker.host, broker.port) == b"hello"
        assert (tmp_path / "embedded" / "embedded-broker.log").is_file()
        assert logging.getLogger("amqtt").propagate is False
    finally:
        broker.stop()
    assert not wait_listening(broker.host, broker.port, 0.5)
    assert logging.getLogger("amqtt").propagate is True, "the broker's log redirection outlived it"
