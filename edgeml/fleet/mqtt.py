"""A small paho-mqtt adapter for the fleet side: connect (credentials, TLS), wait until connected,
reconnect on its own with a capped backoff, and re-subscribe after every reconnect."""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.protocol import BrokerURL
from edgeml.errors import FleetError

log = logging.getLogger("edgeml.fleet.mqtt")

MessageHandler = Callable[[str, bytes, bool], None]


class MqttLink:
    """One MQTT connection. ``on_message(topic, payload, retained)`` runs on paho's network thread.

    ``subscriptions`` are (filter, qos) pairs, (re)subscribed on every connect.
    """

    def __init__(
        self,
        broker: BrokerURL | str,
        client_id: str | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageHandler | None = None,
        clean_start: bool = True,
        max_queued: int = 0,
    ) -> None:
        self.broker = BrokerURL.parse(broker) if isinstance(broker, str) else broker
        self.client_id = client_id or f"edgeml-{uuid.uuid4().hex[:10]}"
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.connected = threading.Event()
        self.connects = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=clean_start
        )
        if self.broker.username:
            self.client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(1, 5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(max_queued)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._started = False

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("broker %s refused the connection: %s", self.broker, rc)
            return
        if self.subscriptions:
            client.subscribe(list(self.subscriptions))
        self.connects += 1
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.connected.clear()
        if self._started:
            log.info("disconnected from %s (%s); reconnecting", self.broker, rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_message is not None:
            try:
                self.on_message(msg.topic, bytes(msg.payload), bool(msg.retain))
            except Exception:  # noqa: BLE001 - a bad message must not kill the network thread
                log.exception("handler failed for a message on %s", msg.topic)

    def start(self, wait: float = 10.0) -> None:
        """Connect and start the network thread. Raises FleetError if not connected within ``wait``."""
        self._started = True
        try:
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise FleetError(
                f"cannot reach the broker at {self.broker}: {exc}", hint="start it or check --broker"
            ) from exc
        self.client.loop_start()
        if wait and not self.connected.wait(wait):
            self.stop()
            raise FleetError(
                f"no connection to the broker at {self.broker} within {wait:g}s",
                hint="start the broker (e.g. mosquitto) or pass --broker mqtt://HOST:PORT",
            )

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        self._started = False
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001
            pass
        self.client.loop_stop()


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``cond`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()
