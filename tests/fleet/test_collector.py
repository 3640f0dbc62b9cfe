"""The collector against a real Mosquitto: bad messages are counted and skipped, duplicates
dropped, the last will marks a device offline, a broker restart loses nothing, and a store outage
is retried without losing the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.protocol import ReportedState, Topics
from edgeml.errors import FleetError
from edgeml.fleet.collector import Collector
from edgeml.fleet.mqtt import wait_for
from edgeml.fleet.store import Store
from tests.fleet.helpers import event, state, telemetry


def client(broker: Any, cid: str, will: tuple[str, bytes] | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def send(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def test_bad_messages_duplicates_and_last_will(tmp_path: Path, shared_broker: Any) -> None:
    topics = Topics("coll")
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    col = Collector(store, shared_broker.url, topics, flush_interval=0.05)
    col.start()
    off = ReportedState(device_id="d1", online=False).to_json()
    dev = client(shared_broker, "coll-d1", will=(topics.state("d1"), off))
    other = client(shared_broker, "coll-x")
    try:
        send(dev, topics.state("d1"), state("d1", "1.0.0").to_json(), retain=True)
        good = telemetry("d1", 7).to_json()
        send(dev, topics.telemetry("d1"), good)
        send(dev, topics.telemetry("d1"), good)  # a redelivery
        send(dev, topics.events("d1"), event("d1", 1, "probation_passed").to_json())
        # not JSON, another major schema, a device id that is not the topic's, a wrong type
        send(other, topics.telemetry("d1"), b"{nope")
        send(other, topics.telemetry("d1"), good.replace(b'"telemetry/1.0"', b'"telemetry/2.0"'))
        send(other, topics.telemetry("d2"), telemetry("d1", 8).to_json())
        send(other, topics.events("d1"), b'{"schema":"event/1.0","device_id":"d1","seq":-1,"event":"x"}')
        assert wait_for(lambda: col.stats.rejected == 4 and col.stats.duplicates == 1, 10), col.stats
        assert col.wait_idle()
        assert store.telemetry_count() == 1 and len(store.events()) == 1
        d = store.device("d1")
        assert d and d["online"] and d["version"] == "1.0.0"
        dev._sock_close()  # noqa: SLF001 - a power cut: the broker publishes the will
        assert wait_for(lambda: store.device("d1")["online"] is False, 10)  # type: ignore[index]
        assert store.device("d1")["version"] == "1.0.0"  # type: ignore[index]
    finally:
        dev.loop_stop()
        other.loop_stop()
        other.disconnect()
        col.stop()


def test_broker_restart_and_store_outage_lose_nothing(tmp_path: Path, broker: Any) -> None:
    topics = Topics("outage")

    class FlakyStore(Store):
        fail = 0

        def write_batch(self, *a: Any, **kw: Any) -> tuple[int, int]:
            if self.fail:
                self.fail -= 1
                raise FleetError("database is down")
            return super().write_batch(*a, **kw)

    store = FlakyStore(f"sqlite:///{tmp_path / 'o.db'}")
    col = Collector(store, broker.url, topics, flush_interval=0.05, client_id="outage-col", persistent=True)
    col.start()
    pub = client(broker, "outage-pub")
    try:
        for seq in range(5):
            send(pub, topics.telemetry("d1"), telemetry("d1", seq).to_json())
        assert wait_for(lambda: store.telemetry_count() == 5, 10)
        broker.restart()
        pub.reconnect()
        assert wait_for(lambda: col.link.connected.is_set(), 20)
        store.fail = 3  # the next three writes fail: the batch is kept and retried
        for seq in range(5, 10):
            send(pub, topics.telemetry("d1"), telemetry("d1", seq).to_json())
        assert wait_for(lambda: store.telemetry_count() == 10, 20), store.telemetry_count()
        assert col.stats.store_errors == 3
        assert [r["seq"] for r in store.telemetry_rows(device_id="d1")] == list(range(10))
    finally:
        pub.loop_stop()
        col.stop()
