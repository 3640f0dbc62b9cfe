"""MQTT adapter (paho-mqtt 2.x, callback API VERSION2).

- Its own network thread: connect, run the paho loop, and on any loss reconnect with capped,
  jittered exponential backoff (``uniform(0.5, 1) * min(cap, base * 2**attempt)``).
- A last will (e.g. the retained state marked offline) set before every connect.
- QoS 1 by default; paho re-sends unacknowledged QoS 1 messages after a reconnect.
- Subscriptions are remembered and renewed on every connect; a message on a topic that matches
  none of them is ignored (some brokers deliver retained messages nobody asked for).
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.errors import TransportError
from device_agent.protocol.broker import BrokerURL
from device_agent.protocol.topics import topic_matches

log = logging.getLogger("edgeml.agent.mqtt")

Handler = Callable[[str, bytes], None]


def backoff_delay(
    attempt: int, base: float, cap: float, rng: Callable[[float, float], float] = random.uniform
) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): capped exponential with equal jitter."""
    raw = min(cap, base * (2 ** min(attempt, 30)))
    return float(raw * rng(0.5, 1.0))


class MqttTransport:
    """One MQTT connection that keeps itself up. Thread-safe ``publish``."""

    def __init__(
        self,
        broker: BrokerURL,
        client_id: str,
        will: Optional[tuple[str, bytes]] = None,
        keepalive: int = 30,
        backoff_min: float = 0.2,
        backoff_max: float = 30.0,
        on_connect: Optional[Callable[[], None]] = None,
        ca_file: Optional[Path] = None,
        cert_file: Optional[Path] = None,
        key_file: Optional[Path] = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.keepalive = keepalive
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.on_connect_cb = on_connect
        self.connected = threading.Event()
        self.connects = 0
        self._stop = threading.Event()
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        c.max_queued_messages_set(0)
        c.max_inflight_messages_set(20)
        if broker.username is not None:
            c.username_pw_set(broker.username, broker.password)
        if broker.tls:
            ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if cert_file and key_file:
                ctx.load_cert_chain(str(cert_file), str(key_file))
            c.tls_set_context(ctx)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Disconnect cleanly (no last will) and end the network thread."""
        self._stop.set()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - best effort on shutdown
            pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            try:
                if first:
                    self.client.connect(self.broker.host, self.broker.port, self.keepalive)
                    first = False
                else:
                    self.client.reconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                delay = backoff_delay(attempt, self.backoff_min, self.backoff_max)
                log.debug("connect to %s failed (%s); retry in %.2fs", self.broker, exc, delay)
                attempt += 1
                self._stop.wait(delay)
                continue
            while not self._stop.is_set():
                rc = self.client.loop(timeout=0.2)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                if self.connected.is_set():
                    attempt = 0
            self.connected.clear()
            if self._stop.is_set():
                break
            delay = backoff_delay(attempt, self.backoff_min, self.backoff_max)
            attempt += 1
            log.info("lost connection to %s; reconnecting in %.2fs", self.broker, delay)
            self._stop.wait(delay)
        try:
            self.client.loop(timeout=0.05)
        except Exception:  # noqa: BLE001
            pass

    # -------------------------------------------------------------- callbacks
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker %s refused the connection: %s", self.broker, reason_code)
            return
        with self._lock:
            subs = list(self._subs.items())
        for topic, (qos, _) in subs:
            client.subscribe(topic, qos=qos)
        self.connects += 1
        self.connected.set()
        if self.on_connect_cb is not None:
            try:
                self.on_connect_cb()
            except Exception:  # noqa: BLE001 - a callback must not kill the network thread
                log.exception("on_connect callback failed")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            handlers = [h for sub, (_, h) in self._subs.items() if topic_matches(sub, msg.topic)]
        for handler in handlers:
            try:
                handler(msg.topic, bytes(msg.payload))
            except Exception:  # noqa: BLE001 - a bad message must not kill the network thread
                log.exception("handler for %s failed", msg.topic)

    # -------------------------------------------------------------- API
    def subscribe(self, topic: str, handler: Handler, qos: int = 1) -> None:
        """Call ``handler(topic, payload)`` for messages matching ``topic`` (renewed on reconnect)."""
        with self._lock:
            self._subs[topic] = (qos, handler)
        if self.connected.is_set():
            self.client.subscribe(topic, qos=qos)

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._subs.pop(topic, None)
        if self.connected.is_set():
            self.client.unsubscribe(topic)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Queue a message (sent now if connected, else after the next connect)."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_wait(self, topic: str, payload: bytes, timeout: float, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's acknowledgement. Raises TransportError on timeout."""
        info = self.publish(topic, payload, qos=qos, retain=retain)
        if not wait_acked(info, timeout):
            raise TransportError(f"broker {self.broker} did not acknowledge {topic} within {timeout}s")


def wait_acked(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    """True once the broker acknowledged ``info`` (QoS 1 PUBACK), False on timeout. Unlike
    paho's ``wait_for_publish`` it also waits on a message queued while disconnected (paho sends
    it after the reconnect)."""
    deadline = time.monotonic() + timeout
    while not _acked(info):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _acked(info: mqtt.MQTTMessageInfo) -> bool:
    # ``is_published()`` raises for a message queued while disconnected (rc NO_CONN), although
    # paho sends it after the reconnect and marks it published on PUBACK: read the flag itself.
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        flag = getattr(info, "_published", None)
        return bool(flag) if flag is not None else False
