"""Release delivery cost: bytes over MQTT per update / model size, and fetch+verify time, beside a
plain retained-message download of the same bytes. Run from the repository root:

    .venv/bin/python bench/release.py [--size 1048576] [--runs 5]

A counting TCP proxy sits between each client and a private Mosquitto, so the byte counts are what
crosses the wire (MQTT framing, topics, subscribe/ack traffic and metadata included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from device_agent.protocol.manifest import ModelManifest, TensorSpec  # noqa: E402
from device_agent.protocol.topics import Topics  # noqa: E402
from device_agent.updater import Updater  # noqa: E402
from edgeml.broker_proc import start_private_broker  # noqa: E402
from edgeml.release.keys import init_keys  # noqa: E402
from edgeml.release.publish import publish  # noqa: E402
from edgeml.settings import load_settings  # noqa: E402


class CountingProxy:
    """Forward TCP 127.0.0.1:<port> -> broker, counting bytes each way."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.down = 0  # broker -> client
        self.up = 0  # client -> broker
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.down = self.up = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, "down"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if hasattr(socket, "TCP_QUICKACK"):  # ack at once, as the device does: measure MQTT, not the proxy
                    src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                with self._lock:
                    if way == "up":
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def make_model(folder: Path, size: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "bench.tflite"
    model.write_bytes(os.urandom(size) if seed else os.urandom(size))
    manifest = ModelManifest(
        name="bench", version="0.0.0", filename=model.name,
        inputs=[TensorSpec("x", [-1, 64])], outputs=[TensorSpec("y", [-1, 10])],
        labels=[str(i) for i in range(10)], metrics={"accuracy": 0.97},
    )
    (folder / "bench.manifest.json").write_text(manifest.to_json().decode())
    return model


def plain_download(url: str, topic: str, size: int) -> float:
    """Subscribe to one retained message holding the whole file; seconds until it arrived."""
    done = threading.Event()
    got: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe(topic, qos=0)

    def on_message(c: Any, u: Any, m: Any) -> None:
        if m.topic == topic:
            got.append(bytes(m.payload))
            done.set()

    client.on_connect, client.on_message = on_connect, on_message
    host, port = url.rsplit("//", 1)[1].split(":")
    start = time.perf_counter()
    client.connect(host, int(port))
    client.loop_start()
    done.wait(30)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    assert got and len(got[0]) == size
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024 * 1024, help="model size in bytes (default 1 MiB)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeml-bench-release-"))
    broker = start_private_broker(work, prefer="mosquitto")
    try:
        proxy = CountingProxy((broker.host, broker.port))
        via_proxy = f"mqtt://127.0.0.1:{proxy.port}"
        settings = load_settings(work / "home", env={}, broker=broker.url, fleet="bench")
        settings.ensure_home()
        init_keys(settings)
        topics = Topics("bench")
        rows: dict[str, list[tuple[float, int, int]]] = {"first": [], "next": [], "plain": []}
        version = 0
        for run in range(args.runs):
            device = work / f"device-{run}"
            (device / "meta").mkdir(parents=True)
            shutil.copyfile(settings.repo_dir / "metadata" / "root.json", device / "meta" / "root.json")
            for kind in ("first", "next"):
                version += 1
                model = make_model(work / f"model-{version}", args.size, version)
                publish(settings, model, version=f"{version}.0")
                proxy.reset()
                start = time.perf_counter()
                with Updater(device / "meta", via_proxy, topics) as up:
                    up.refresh()
                    rel = up.newest("bench")
                    assert rel is not None
                    out = up.download(rel, device / "slot" / "model.tflite")
                    elapsed = time.perf_counter() - start
                time.sleep(0.05)
                assert out.read_bytes() == model.read_bytes()
                rows[kind].append((elapsed, proxy.down, proxy.up))
            # the baseline: the same bytes as one plain retained message, no signing, no chunks
            plain_topic = f"{topics.root}/plain/{run}"
            pub = mqtt.Client(CallbackAPIVersion.VERSION2)
            pub.connect(broker.host, broker.port)
            pub.loop_start()
            pub.publish(plain_topic, model.read_bytes(), qos=1, retain=True).wait_for_publish(30)
            pub.disconnect()
            pub.loop_stop()
            proxy.reset()
            elapsed = plain_download(via_proxy, plain_topic, args.size)
            time.sleep(0.05)
            rows["plain"].append((elapsed, proxy.down, proxy.up))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    size = args.size
    plain_t = statistics.median(r[0] for r in rows["plain"])
    print(f"release delivery over MQTT, model {size} bytes, median of {args.runs} runs (Mosquitto, loopback)")
    print(f"{'case':<34} {'down bytes':>11} {'up bytes':>9} {'total/size':>10} {'time ms':>8} {'x plain':>8}")
    labels = {
        "first": "signed update, fresh device",
        "next": "signed update, device has metadata",
        "plain": "plain retained message (baseline)",
    }
    for kind in ("first", "next", "plain"):
        t = statistics.median(r[0] for r in rows[kind])
        down = int(statistics.median(r[1] for r in rows[kind]))
        up = int(statistics.median(r[2] for r in rows[kind]))
        print(f"{labels[kind]:<34} {down:>11} {up:>9} {(down + up) / size:>10.4f} {t * 1000:>8.1f} {t / plain_t:>8.2f}")
    nxt = statistics.median((r[1] + r[2]) / size for r in rows["next"])
    print(f"target: bytes per update / model size <= 1.05 -> {nxt:.4f} ({'ok' if nxt <= 1.05 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
