"""An embedded MQTT broker (amqtt) for machines without Mosquitto: the demo's fallback.

It runs in a background thread with its own event loop, on loopback, without authentication
and without TLS: for a demo or a laptop, never for a fleet (use ``edgeml broker config`` and
Mosquitto for that). Retained messages live in memory only.

Note: amqtt delivers retained messages to clients that never subscribed to them; every edgeml
client ignores topics it did not subscribe to (``device_agent.protocol.topic_matches``).

    handle = start_embedded_broker(0)      # 0: a free port
    print(handle.url)                     # mqtt://127.0.0.1:PORT
    handle.stop()
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from edgeml.errors import UsageError

log = logging.getLogger("edgeml.broker")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


@dataclass
class EmbeddedBroker:
    """A running embedded broker. ``url`` is ``mqtt://HOST:PORT``; :meth:`stop` shuts it down."""

    host: str
    port: int
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _broker: Any = field(repr=False)
    _stopped: bool = False

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the broker down and join its thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(timeout)
            except Exception as exc:  # noqa: BLE001 - shutting down: report, never raise
                log.warning("embedded broker shutdown: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded_broker(port: int = 1883, host: str = "127.0.0.1", timeout: float = 10.0) -> EmbeddedBroker:
    """Start an amqtt broker on ``host:port`` (``port=0``: a free port) in a background thread.

    Returns once it accepts connections. Raises UsageError when amqtt is missing or the port
    is taken.
    """
    try:
        from amqtt.broker import Broker
    except ImportError as exc:  # pragma: no cover - amqtt is in the host extra
        raise UsageError("the embedded broker needs amqtt", hint="pip install 'edgeml[host]'") from exc
    if port == 0:
        port = _free_port(host)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                hint="another broker may be running there; pick another --port",
            ) from exc

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            broker = Broker(_config(host, port), loop=loop)
            state["broker"] = broker
            await broker.start()

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            state["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name=f"edgeml-broker-{port}", daemon=True)
    thread.start()
    if not ready.wait(timeout) or "error" in state:
        raise UsageError(
            f"the embedded broker did not start on {host}:{port}: {state.get('error', 'timed out')}",
            hint="install Mosquitto (apt-get install mosquitto) or pick another --port",
        )
    return EmbeddedBroker(host, port, loop, thread, state["broker"])
