"""A private MQTT broker for the demo: Mosquitto on a free port when the binary exists, else the
embedded Python broker (amqtt) — either way nothing to set up by hand.

Usage::

    with start_private_broker(workdir) as broker:
        print(broker.url)   # mqtt://127.0.0.1:PORT

The Mosquitto configuration never drops QoS 1 messages for a slow subscriber (the default
``max_queued_messages 1000`` would silently lose telemetry at the collector).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from edgeml.errors import UsageError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> Optional[str]:
    """Path of the ``mosquitto`` binary, or None."""
    return shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def wait_listening(host: str, port: int, timeout: float, proc: Optional[subprocess.Popen[bytes]] = None) -> bool:
    """True once something accepts TCP connections on host:port within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class PrivateBroker:
    """One broker process (or embedded broker) this program started and will stop."""

    kind = "none"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> PrivateBroker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class MosquittoProcess(PrivateBroker):
    """Mosquitto from its binary, listening on 127.0.0.1:PORT, configuration and log in ``workdir``."""

    kind = "mosquitto"

    def __init__(self, workdir: Path, binary: Optional[str] = None, port: Optional[int] = None) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise UsageError(
                "mosquitto is not installed", hint="install it (apt-get install mosquitto) or use the embedded broker"
            )
        super().__init__("127.0.0.1", port or free_port())
        self.binary = found
        self.workdir = Path(workdir)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        return "\n".join(
            [
                f"listener {self.port} {self.host}",
                "allow_anonymous true",
                "persistence false",
                "max_queued_messages 0",
                "max_inflight_messages 0",
                "message_size_limit 0",
                "log_type error",
                "log_type warning",
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it listens. Raises UsageError with the log tail when it does not."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        if not wait_listening(self.host, self.port, timeout, self.proc):
            tail = self.log_path.read_text(errors="replace")[-1500:]
            self.stop()
            raise UsageError(
                f"mosquitto did not start on port {self.port}: {tail.strip()}", hint=f"see {self.log_path}"
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class EmbeddedBroker(PrivateBroker):
    """The embedded Python broker (``edgeml broker run``), in a thread of this process. With a
    ``workdir``, its log (amqtt's and its event loop's) goes to ``workdir/embedded-broker.log``
    instead of this process's stderr, as Mosquitto's goes to ``mosquitto.log``."""

    kind = "embedded"
    LOGGERS = ("amqtt", "asyncio", "transitions")

    def __init__(self, port: Optional[int] = None, workdir: Optional[Path] = None) -> None:
        super().__init__("127.0.0.1", port or free_port())
        self._handle: Any = None
        self.workdir = Path(workdir) if workdir is not None else None
        self.log_path = self.workdir / "embedded-broker.log" if self.workdir is not None else None
        self._log_handler: Optional[logging.Handler] = None
        self._saved: list[tuple[logging.Logger, bool]] = []

    def _redirect_logs(self) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self._log_handler = handler
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.propagate))
            logger.addHandler(handler)
            logger.propagate = False

    def _restore_logs(self) -> None:
        handler, self._log_handler = self._log_handler, None
        for logger, propagate in self._saved:
            if handler is not None:
                logger.removeHandler(handler)
            logger.propagate = propagate
        self._saved = []
        if handler is not None:
            handler.close()

    def start(self, timeout: float = 15.0) -> None:
        """Start it; raises UsageError when the embedded broker is unavailable or does not listen."""
        try:
            from edgeml.broker import start_embedded_broker
        except ImportError as exc:
            raise UsageError(
                "no MQTT broker: mosquitto is not installed and the embedded broker is unavailable",
                hint="install mosquitto (apt-get install mosquitto) or pass --broker mqtt://HOST:PORT",
            ) from exc
        self._redirect_logs()
        self._handle = start_embedded_broker(host=self.host, port=self.port)
        if not wait_listening(self.host, self.port, timeout):
            self.stop()
            raise UsageError(f"the embedded broker did not listen on port {self.port}", hint="pass --broker mqtt://HOST:PORT")

    def stop(self) -> None:
        handle, self._handle = self._handle, None
        try:
            if handle is not None:
                handle.stop()
        finally:
            self._restore_logs()


def start_private_broker(workdir: Path, prefer: str = "auto") -> PrivateBroker:
    """Start Mosquitto (``prefer`` "auto" or "mosquitto") when its binary exists, else the embedded
    broker (``prefer`` "auto" or "embedded"). Raises UsageError when neither can start."""
    if prefer not in ("auto", "mosquitto", "embedded"):
        raise UsageError(f"unknown broker kind {prefer!r}", hint="use auto, mosquitto or embedded")
    broker: PrivateBroker
    if prefer != "embedded" and find_mosquitto():
        broker = MosquittoProcess(Path(workdir) / "mosquitto")
    elif prefer == "mosquitto":
        raise UsageError("mosquitto is not installed", hint="apt-get install mosquitto, or use --broker-kind embedded")
    else:
        broker = EmbeddedBroker(workdir=Path(workdir) / "embedded")
    broker.start()
    return broker
