"""A real Mosquitto for tests: started from the ``mosquitto`` binary on a free port, with
persistence in a temp folder so that retained messages survive :meth:`MosquittoBroker.restart`.

Tests can ``stop()``, ``start()`` and ``restart()`` it to inject broker outages on a live
connection. ``extra_config`` lets a test run a generated configuration (ACLs, TLS, passwords).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from edgeml.broker_proc import find_mosquitto, free_port, wait_listening


class MosquittoBroker:
    """One private Mosquitto process. ``url`` is ``mqtt://127.0.0.1:PORT``."""

    def __init__(self, workdir: Path, port: int | None = None, config: str | None = None) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto binary not found: run `bash .ci/system-deps.sh mosquitto`")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.custom_config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config_text(self) -> str:
        if self.custom_config is not None:
            return self.custom_config
        return "\n".join(
            [
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                "persistence true",
                f"persistence_location {self.workdir}/",
                "autosave_interval 1",
                # stay this user: run as root, mosquitto would switch to user `mosquitto`, which cannot
                # write the private temp folder, and retained messages would not survive a restart
                f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                # never drop QoS 1 messages for a slow subscriber in tests
                "max_queued_messages 0",
                "max_inflight_messages 0",
                "message_size_limit 0",
                "log_type error",
                "log_type warning",
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            return
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        if wait_listening(self.host, self.port, timeout, self.proc):
            return
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: retained messages are saved to disk)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: re-read password file and ACL."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
