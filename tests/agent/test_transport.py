"""The MQTT adapter against a real Mosquitto that the test restarts."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from device_agent.protocol.broker import BrokerURL
from device_agent.transport import MqttTransport, backoff_delay, wait_acked
from tests.agent.harness import wait_until


def test_backoff_is_capped_jittered_and_never_zero() -> None:
    assert backoff_delay(0, 0.2, 30, rng=lambda a, b: b) == 0.2
    assert backoff_delay(3, 0.2, 30, rng=lambda a, b: b) == 1.6
    assert backoff_delay(50, 0.2, 30, rng=lambda a, b: b) == 30
    assert backoff_delay(50, 0.2, 30, rng=lambda a, b: a) == 15
    samples = {round(backoff_delay(4, 0.2, 30), 6) for _ in range(50)}
    assert len(samples) > 10 and all(1.6 <= s <= 3.2 for s in samples)


def test_reconnects_resubscribes_and_delivers_queued_qos1_after_a_restart(broker: Any) -> None:
    url = BrokerURL.parse(broker.url)
    got: list[bytes] = []
    seen = threading.Event()

    def handler(topic: str, payload: bytes) -> None:
        got.append(payload)
        seen.set()

    sub = MqttTransport(url, "t-sub", backoff_min=0.05, backoff_max=0.3)
    sub.subscribe("t/in", handler)
    pub = MqttTransport(url, "t-pub", backoff_min=0.05, backoff_max=0.3)
    sub.start()
    pub.start()
    try:
        assert sub.wait_connected(5) and pub.wait_connected(5)
        # retained, so that delivery does not race the subscriber's SUBSCRIBE after each connect
        assert wait_acked(pub.publish("t/in", b"one", retain=True), 5)
        assert seen.wait(5)
        broker.stop()
        wait_until(lambda: not pub.connected.is_set(), what="disconnect seen")
        info = pub.publish("t/in", b"two", retain=True)  # queued while the broker is down
        assert not wait_acked(info, 0.3)
        broker.start()
        assert wait_acked(info, 10), "queued QoS 1 message not delivered after reconnect"
        wait_until(lambda: b"two" in got, what="resubscribed and delivered")
        assert sub.connects >= 2 and pub.connects >= 2
    finally:
        sub.stop()
        pub.stop()


def test_messages_on_topics_not_subscribed_are_ignored() -> None:
    t = MqttTransport(BrokerURL.parse("mqtt://127.0.0.1:1"), "t-filter")
    got: list[str] = []
    t.subscribe("a/+/desired", lambda topic, p: got.append(topic))
    t._on_message(None, None, SimpleNamespace(topic="a/dev1/desired", payload=b"x"))
    t._on_message(None, None, SimpleNamespace(topic="a/dev1/other", payload=b"x"))
    t._on_message(None, None, SimpleNamespace(topic="repo/metadata/root.json", payload=b"x"))
    assert got == ["a/dev1/desired"]


def test_a_failing_handler_does_not_kill_the_network_thread() -> None:
    t = MqttTransport(BrokerURL.parse("mqtt://127.0.0.1:1"), "t-bad")
    got: list[str] = []

    def bad(topic: str, payload: bytes) -> None:
        raise ValueError("boom")

    t.subscribe("x/#", bad)
    t.subscribe("x/y", lambda topic, p: got.append(topic))
    t._on_message(None, None, SimpleNamespace(topic="x/y", payload=b""))
    assert got == ["x/y"]
