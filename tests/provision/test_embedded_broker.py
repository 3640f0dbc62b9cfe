"""The embedded broker (amqtt) with a real paho client: connect, publish/subscribe at QoS 1,
retained messages, clean stop; and `edgeml broker run` as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeml.errors import UsageError
from edgeml.provision.embedded_broker import start_embedded_broker
from tests.brokers import free_port
from tests.provision.helpers import connect, publish, subscribe, wait_for


def test_embedded_broker_carries_messages() -> None:
    handle = start_embedded_broker(0)
    try:
        assert handle.url == f"mqtt://127.0.0.1:{handle.port}"
        pub = connect(handle.port)
        assert pub.ok, pub.reason
        publish(pub, "edgeml/default/devices/d1/desired", b"retained", retain=True)
        sub = connect(handle.port)
        subscribe(sub, "edgeml/default/devices/d1/#")
        publish(pub, "edgeml/default/devices/d1/telemetry", b"live")
        assert wait_for(lambda: {"edgeml/default/devices/d1/desired", "edgeml/default/devices/d1/telemetry"}
                        <= sub.topics())
        assert sub.payloads("edgeml/default/devices/d1/desired") == [b"retained"]
        for c in (pub, sub):
            c.close()
        with pytest.raises(UsageError, match="cannot listen"):
            start_embedded_broker(handle.port)
    finally:
        handle.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", handle.port), timeout=0.5)
    handle.stop()  # idempotent


def test_broker_run_command(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "EDGEML_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeml", "broker", "run", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    try:
        assert wait_for(lambda: connect(port).ok, timeout=30), "edgeml broker run did not accept a client"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert b"embedded broker listening" in out and b"stopped" in out
    time.sleep(0.1)
