"""Reading retained messages from an MQTT broker, with a fast answer for "does not exist".

MQTT has no "get": a client subscribes and the broker sends the retained message, if any. To
learn that a topic has *no* retained message without waiting for a timeout, :class:`RetainedReader`
subscribes to the wanted topics (QoS 0) and then publishes a nonce to a private marker topic it
is also subscribed to. The broker sends the retained messages of a subscription while it
processes the SUBSCRIBE, before it reads our later PUBLISH, so when the marker comes back every
retained message that exists has already arrived (checked against Mosquitto in
``tests/release/test_mqtt_reader.py``). When every wanted topic has answered, the reader does
not wait for the marker at all (so a broker that delays small writes costs nothing in the common
case). QoS 0 matters: a broker may let a QoS 0 marker overtake
QoS 1 messages that sit in its per-client queue.

Messages on topics we did not ask for are ignored (some brokers deliver retained messages to
clients that never subscribed).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.protocol.broker import BrokerURL
from device_agent.protocol.topics import Topics, check_segment
from device_agent.updater.errors import KEPT, BrokerUnavailableError, OversizeError

log = logging.getLogger("edgeml.agent.updater")


@dataclass(frozen=True)
class TLSFiles:
    """Credentials beyond the URL: a CA bundle and a client certificate (mutual TLS), or a
    username/password (these win over ones in the URL)."""

    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    username: Optional[str] = None
    password: Optional[str] = None


@dataclass
class ReaderStats:
    """What went over the wire for this reader (payload + topic bytes, as received)."""

    requests: int = 0
    messages: int = 0
    bytes_received: int = 0


class RetainedReader:
    """One MQTT connection that answers "what is retained at these topics?".

    ``get_many`` returns ``{topic: bytes | None}`` (None: nothing retained there). Raises
    :class:`BrokerUnavailableError` when the broker cannot be reached for ``reconnect_timeout``
    seconds or does not answer within ``request_timeout``; :class:`OversizeError` when a
    message is larger than the cap given for it (the payload is dropped on arrival).
    """

    def __init__(
        self,
        broker: Union[BrokerURL, str],
        topics: Topics,
        client_id: Optional[str] = None,
        connect_timeout: float = 10.0,
        request_timeout: float = 15.0,
        reconnect_timeout: float = 30.0,
        tls: Optional[TLSFiles] = None,
    ) -> None:
        self.url = broker if isinstance(broker, BrokerURL) else BrokerURL.parse(broker)
        self.tls = tls or TLSFiles()
        self.topics = topics
        self.client_id = check_segment(client_id or f"updater-{uuid.uuid4().hex[:12]}", "client id")
        self.marker_topic = f"{topics.root}/probe/{self.client_id}"
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.reconnect_timeout = reconnect_timeout
        self.stats = ReaderStats()
        self._cond = threading.Condition()
        self._request_lock = threading.Lock()
        self._connected = False
        self._generation = 0
        self._refused: Optional[str] = None
        self._wanted: dict[str, int] = {}
        self._got: dict[str, bytes] = {}
        self._oversize: dict[str, int] = {}
        self._nonce = b""
        self._marker_seen = False
        self._client: Optional[mqtt.Client] = None

    # connection ------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect (or keep trying in the background). Raises BrokerUnavailableError after
        ``connect_timeout`` without a connection."""
        if self._client is None:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
            username = self.tls.username or self.url.username
            if username:
                client.username_pw_set(username, self.tls.password or self.url.password)
            if self.url.tls:
                client.tls_set(
                    ca_certs=str(self.tls.ca_file) if self.tls.ca_file else None,
                    certfile=str(self.tls.cert_file) if self.tls.cert_file else None,
                    keyfile=str(self.tls.key_file) if self.tls.key_file else None,
                )
            client.reconnect_delay_set(min_delay=1, max_delay=2)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            self._client = client
            try:
                client.connect_async(self.url.host, self.url.port, keepalive=30)
            except (OSError, ValueError) as exc:
                raise BrokerUnavailableError(f"cannot connect to {self.url}: {exc}", hint=KEPT) from exc
            client.loop_start()
        self._wait_connected(self.connect_timeout)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    def _wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    why = f" ({self._refused})" if self._refused else ""
                    raise BrokerUnavailableError(
                        f"broker {self.url} unreachable for {timeout:.0f}s{why}",
                        hint=f"check the broker and the network; {KEPT}; chunks already fetched are kept for a resume",
                    )
                self._cond.wait(min(left, 0.5))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            with self._cond:
                self._refused = f"connection refused: {reason_code}"
            return
        client.subscribe(self.marker_topic, qos=0)
        with self._cond:
            self._connected = True
            self._refused = None
            self._cond.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            self._connected = False
            self._generation += 1
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any) -> None:
        _quick_ack(client)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        _quick_ack(client)
        topic, payload = msg.topic, bytes(msg.payload)
        with self._cond:
            if topic == self.marker_topic:
                if payload == self._nonce:
                    self._marker_seen = True
                    self._cond.notify_all()
                return
            cap = self._wanted.get(topic)
            if cap is None:  # not asked for: ignore
                return
            self.stats.messages += 1
            self.stats.bytes_received += len(payload) + len(topic)
            if len(payload) > cap:
                self._oversize[topic] = len(payload)
            else:
                self._got[topic] = payload

    def _all_in(self) -> bool:
        """Every wanted topic answered (no need to wait for the marker). Call with the lock held."""
        return len(self._got) + len(self._oversize) >= len(self._wanted)

    # requests --------------------------------------------------------------------------------
    def get(self, topic: str, max_bytes: int) -> Optional[bytes]:
        """The retained payload at ``topic`` or None. See :meth:`get_many`."""
        return self.get_many([topic], max_bytes)[topic]

    def get_many(self, topics: Sequence[str], max_bytes: int) -> dict[str, Optional[bytes]]:
        """Retained payloads at ``topics`` (None where nothing is retained).

        Survives a lost connection: what arrived is kept, the rest is asked again after the
        reconnect. Raises BrokerUnavailableError, OversizeError.
        """
        if self._client is None:
            self.connect()
        results: dict[str, Optional[bytes]] = {}
        pending = list(dict.fromkeys(topics))
        with self._request_lock:
            while pending:
                self._wait_connected(self.reconnect_timeout)
                got, seen = self._one_round(pending, max_bytes)
                results.update(got)
                if seen:
                    for t in pending:
                        results.setdefault(t, None)
                pending = [t for t in pending if t not in results]
        return results

    def _one_round(self, pending: list[str], max_bytes: int) -> tuple[dict[str, bytes], bool]:
        client = self._client
        assert client is not None
        nonce = uuid.uuid4().hex.encode()
        with self._cond:
            generation = self._generation
            self._wanted = {t: max_bytes for t in pending}
            self._got, self._oversize = {}, {}
            self._nonce, self._marker_seen = nonce, False
        self.stats.requests += 1
        client.subscribe([(t, 0) for t in pending])
        client.publish(self.marker_topic, nonce, qos=0)
        deadline = time.monotonic() + self.request_timeout
        with self._cond:
            while not self._marker_seen and self._generation == generation and not self._all_in():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            seen = self._marker_seen or self._all_in()
            lost = self._generation != generation and not seen
            got, oversize = dict(self._got), dict(self._oversize)
            self._wanted, self._got, self._oversize = {}, {}, {}
        if not lost:
            client.unsubscribe(list(pending))
        if oversize:
            topic, size = next(iter(oversize.items()))
            raise OversizeError(
                f"{topic} holds {size} bytes, over the {max_bytes}-byte limit",
                hint=f"refused as endless data; {KEPT}",
            )
        if not seen and not lost:
            raise BrokerUnavailableError(
                f"broker {self.url} did not answer within {self.request_timeout:.0f}s "
                f"(no echo on {self.marker_topic})",
                hint=f"check the broker's load, and that its ACL lets this client read and write "
                f"{self.topics.root}/probe/<client id> and read {self.topics.repo}/#; {KEPT}",
            )
        return got, seen


def _quick_ack(client: Any) -> None:
    """Acknowledge received TCP data now (Linux). A broker that does not set TCP_NODELAY holds a
    small retained message until our ACK of the SUBACK, which the kernel delays by ~40 ms: with
    one subscribe per request that delay would dominate a metadata refresh."""
    opt = getattr(socket, "TCP_QUICKACK", None)
    sock = client.socket() if client is not None else None
    if opt is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, opt, 1)
    except (OSError, AttributeError):
        pass
