"""MQTT clients for the provisioning tests: connect with a password or a certificate and report
whether the broker let us in, collect messages, publish and wait."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as mqtt


@dataclass
class Conn:
    """The result of one connection attempt; ``client`` is None when refused."""

    client: Optional[mqtt.Client]
    reason: str
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ok(self) -> bool:
        return self.client is not None

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _, _ in self.messages}

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


def connect(
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    client_id: str | None = None,
    clean: bool = True,
    timeout: float = 5.0,
) -> Conn:
    """Connect to 127.0.0.1:port. TLS when ``ca`` is given (server verified against it)."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:10]}", clean_session=clean
    )
    conn = Conn(None, "")
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        result["rc"] = rc
        done.set()

    def on_disconnect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        result.setdefault("disconnect", rc)
        done.set()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        with conn.lock:
            conn.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    if username is not None:
        client.username_pw_set(username, password)
    if ca is not None:
        ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key))
        client.tls_set_context(ctx)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        conn.reason = f"{type(exc).__name__}: {exc}"
        return conn
    client.loop_start()
    done.wait(timeout)
    rc = result.get("rc")
    if rc is not None and not rc.is_failure and "disconnect" not in result:
        # a TLS 1.3 server may reject the client certificate just after the handshake: settle briefly
        time.sleep(0.2)
        if "disconnect" not in result:
            conn.client = client
            conn.reason = "connected"
            return conn
    client.loop_stop()
    conn.reason = str(rc if rc is not None else result.get("disconnect", "no CONNACK"))
    return conn


def subscribe(conn: Conn, *topics: str, qos: int = 1, settle: float = 0.3) -> list[Any]:
    """Subscribe and wait for the SUBACK; returns the reason codes."""
    assert conn.client is not None
    got = threading.Event()
    codes: list[Any] = []

    def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, props: Any) -> None:
        codes.extend(rcs)
        got.set()

    conn.client.on_subscribe = on_subscribe
    conn.client.subscribe([(t, qos) for t in topics])
    assert got.wait(5), "no SUBACK"
    time.sleep(settle)
    return codes


def publish(conn: Conn, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
    assert conn.client is not None
    info = conn.client.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(5)


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
