"""Fleet benchmark: telemetry ingest with 1,000 simulated devices, a staged rollout to 1,000
devices, controller memory. Measured side by side in one run against a private Mosquitto.

1. Ingest: real protocol telemetry windows (~600 bytes, QoS 1) of 1,000 devices are queued at the
   broker for a receiver that is away (kept MQTT session); then the receiver connects and drains
   them. Receivers, one after the other: a bare paho subscriber that only counts (the ceiling of
   one Python process), the collector into SQLite, the collector into PostgreSQL, and two
   collectors sharing the load through an MQTT shared subscription into PostgreSQL.
   Rate = messages stored / (last stored - receiver connected).
2. Rollout: a 50 KB model published as a signed release; 1,000 lightweight protocol devices (in a
   child process, sharing 25 MQTT connections) that fetch the target's chunks from the broker and
   check each against its address; the controller rolls it out in stages 1,10,50,100 with soak 0
   and every default gate judged on each stage's telemetry. Time = start -> every device reports it.
3. Controller RSS after the rollout (psutil).

Run from the repository root: ``.venv/bin/python bench/fleet.py [--devices 1000] [--windows 20]``.
PostgreSQL parts are skipped with a note when no server answers (``bash .ci/system-deps.sh postgres``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from device_agent.protocol import Topics  # noqa: E402

PG_URL = os.environ.get("EDGEML_TEST_PG_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test")


# ---------------------------------------------------------------------------------------------
# child processes
def run_publisher(broker: str, fleet: str, devices: int, windows: int) -> None:
    """Pre-build every message, wait for 'go' on stdin, publish them all, print the send times."""
    import random

    from edgeml.fleet.litefleet import LiteFleet, _Dev

    topics = Topics(fleet)
    lf = LiteFleet.__new__(LiteFleet)
    lf.rng, lf.profiles, lf.requests_per_window = random.Random(0), {}, 100
    devs = [_Dev(f"bench-{i:04d}", None, "1.0.0", "bench") for i in range(devices)]  # type: ignore[arg-type]
    now = time.time()
    msgs = []
    for w in range(windows):
        for d in devs:
            msgs.append((topics.telemetry(d.device_id), lf.window(d, now + w, now + w + 1).to_json()))
    host, port = broker.replace("mqtt://", "").split(":")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, int(port))
    c.loop_start()
    print(json.dumps({"ready": len(msgs), "bytes": sum(len(m) for _, m in msgs) / len(msgs)}), flush=True)
    sys.stdin.readline()
    t0 = time.time()
    infos = [c.publish(t, m, qos=1) for t, m in msgs]
    for i in infos:
        i.wait_for_publish(60)
    t1 = time.time()
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"sent": len(msgs), "t0": t0, "t1": t1}), flush=True)


def run_collector(broker: str, fleet: str, store_url: str, prefix: str, share: str) -> None:
    from edgeml.fleet.collector import Collector
    from edgeml.fleet.store import Store

    def make() -> Collector:
        return Collector(Store(store_url, prefix=prefix), broker, Topics(fleet), share_group=share,
                         client_id=f"bench-col2-{fleet}", persistent=True)

    col = make()
    col.start()  # subscribe with a kept session, then go away while the backlog builds
    col.stop()
    print("ready", flush=True)
    sys.stdin.readline()
    col = make()
    col.start()
    sys.stdin.readline()
    col.stop()


def run_lite_fleet(broker: str, fleet: str, devices: int) -> None:
    from edgeml.fleet.litefleet import LiteFleet, LiteProfile

    lf = LiteFleet(broker, Topics(fleet), devices, prefix="dev", model="bench", version="1.0.0",
                   profiles={"1.0.0": LiteProfile(), "2.0.0": LiteProfile()}, telemetry_interval=1.0,
                   requests_per_window=50, shared_links=25, fetch=True)
    lf.start()
    print("ready", flush=True)
    sys.stdin.readline()
    lf.stop()


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=str(ROOT))


# ---------------------------------------------------------------------------------------------
# ingest
def pg_reachable() -> Optional[str]:
    try:
        import sqlalchemy as sa

        e = sa.create_engine(PG_URL)
        with e.connect() as conn:
            conn.execute(sa.text("select 1"))
        e.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def ingest(broker: Any, kind: str, devices: int, windows: int, tmp: Path) -> dict[str, Any]:
    """Queue ``devices * windows`` telemetry messages at the broker for a subscriber that is away
    (a kept MQTT session), then let it in and time how fast it drains them: the receiver's rate,
    independent of how fast one Python publisher can send."""
    fleet = f"ing{uuid.uuid4().hex[:6]}"
    total = devices * windows
    pub = child("--publisher", broker.url, fleet, str(devices), str(windows))
    assert pub.stdout is not None and pub.stdin is not None
    info = json.loads(pub.stdout.readline())
    store = None
    extra: list[subprocess.Popen[str]] = []
    counted = {"n": 0, "last": 0.0}
    done = threading.Event()
    topic = Topics(fleet).all_devices("telemetry")
    if kind == "bare":
        def bare_client() -> Any:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{fleet}", clean_session=False)
            ready = threading.Event()
            c.on_connect = lambda cl, *_: (cl.subscribe(topic, 1), ready.set())
            c.on_message = on_msg
            c.connect(broker.host, broker.port)
            c.loop_start()
            ready.wait(5)
            return c

        def on_msg(_c: Any, _u: Any, _m: Any) -> None:
            counted["n"] += 1
            counted["last"] = time.time()
            if counted["n"] >= total:
                done.set()

        c = bare_client()
        time.sleep(0.3)
        c.loop_stop()
        c.disconnect()
    else:
        from edgeml.fleet.collector import Collector
        from edgeml.fleet.store import Store

        url = f"sqlite:///{tmp / (fleet + '.db')}" if kind == "sqlite" else PG_URL
        prefix = "" if kind == "sqlite" else f"b{fleet}_"
        share = f"bench{fleet}" if kind == "postgresql x2" else None
        store = Store(url, prefix=prefix)

        def collector() -> Any:
            return Collector(store, broker.url, Topics(fleet), share_group=share, client_id=f"bench-col-{fleet}",
                             persistent=True)

        col = collector()
        col.start()
        time.sleep(0.3)
        col.stop()
        if share:
            p = child("--collector", broker.url, fleet, url, prefix, share)
            assert p.stdout is not None
            p.stdout.readline()
            extra.append(p)
    pub.stdin.write("go\n")
    pub.stdin.flush()
    sent = json.loads(pub.stdout.readline())
    pub.wait(30)
    time.sleep(1.0)  # let the broker settle its queues
    t0 = time.time()
    if kind == "bare":
        c = bare_client()
        done.wait(180)
        c.loop_stop()
        c.disconnect()
        n, last = counted["n"], counted["last"]
    else:
        assert store is not None
        for p in extra:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        col = collector()
        col.start()
        deadline = time.time() + 180
        n = 0
        while time.time() < deadline:
            n = store.telemetry_count()
            if n >= total:
                break
            time.sleep(0.05)
        last = time.time()
        col.stop()
        for p in extra:
            assert p.stdin is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
            p.wait(30)
        if kind != "sqlite":
            store.drop_all()
        store.close()
    elapsed = last - t0
    return {"receiver": kind, "messages": n, "expected": total, "seconds": round(elapsed, 2),
            "msg_per_s": round(n / elapsed) if elapsed > 0 else None,
            "publisher_msg_per_s": round(total / (sent["t1"] - sent["t0"])), "bytes_per_msg": round(info["bytes"])}


# ---------------------------------------------------------------------------------------------
# rollout
def write_model(folder: Path, version: str, size: int = 50 * 1024) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.tflite"
    path.write_bytes(os.urandom(size))
    manifest = {"schema": "manifest/1.0", "name": "bench", "version": version, "format": "tflite",
                "filename": "bench.tflite", "inputs": [{"name": "x", "shape": [-1, 4]}],
                "outputs": [{"name": "y", "shape": [-1, 4]}], "labels": ["0", "1", "2", "3"]}
    (folder / "bench.manifest.json").write_text(json.dumps(manifest))
    return path


def rollout(broker: Any, devices: int, tmp: Path) -> dict[str, Any]:
    import psutil

    from edgeml.fleet.controller import Controller
    from edgeml.fleet.mqtt import wait_for
    from edgeml.release.keys import init_keys
    from edgeml.release.publish import publish
    from edgeml.settings import load_settings

    fleet = f"ro{uuid.uuid4().hex[:6]}"
    settings = load_settings(tmp / "home", env={}, broker=broker.url, fleet=fleet)
    init_keys(settings)
    for v in ("1.0.0", "2.0.0"):
        publish(settings, write_model(tmp / "models" / v, v), name="bench", version=v)
    lite = child("--lite-fleet", broker.url, fleet, str(devices))
    assert lite.stdout is not None and lite.stdin is not None
    lite.stdout.readline()
    rss0 = psutil.Process().memory_info().rss
    c = Controller(settings, broker.url, f"sqlite:///{tmp / 'rollout.db'}", http_port=0, tick_interval=0.25,
                   refresh_timestamp=False).start()
    try:
        wait_for(lambda: len(c.store.device_views()) >= devices, 60)
        time.sleep(3)  # a few windows of the current version for the control groups
        t0 = time.time()
        c.start_rollout("bench", "2.0.0", stages="1,10,50,100", soak=0, min_devices=5, min_requests=200)
        ok = wait_for(lambda: c.rollout_status("bench")["devices_at_version"] >= devices, 300, interval=0.2)
        t1 = time.time()
        st = c.rollout_status("bench")
        stage_times = [round(h["t"] - t0, 1) for h in st["history"] if h["event"] == "stage_started"]
        wait_for(lambda: c.rollout_status("bench")["state"] != "running", 30)
        rss = psutil.Process().memory_info().rss
        state = c.rollout_status("bench")["state"]
        dev_rss = psutil.Process(lite.pid).memory_info().rss
    finally:
        c.stop()
        lite.stdin.write("stop\n")
        lite.stdin.flush()
        lite.wait(30)
    return {"devices": devices, "model_bytes": 50 * 1024, "reached_all": ok, "seconds_to_all": round(t1 - t0, 1),
            "stage_started_at_s": stage_times, "final_state": state, "controller_rss_mb": round(rss / 2**20, 1),
            "controller_rss_before_mb": round(rss0 / 2**20, 1), "lite_fleet_process_rss_mb": round(dev_rss / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=20, help="telemetry windows per device for the ingest runs")
    ap.add_argument("--skip-rollout", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from tests.brokers import MosquittoBroker

    out: dict[str, Any] = {"ingest": [], "rollout": None, "notes": []}
    with tempfile.TemporaryDirectory(prefix="edgeml-bench-fleet-") as d:
        tmp = Path(d)
        broker = MosquittoBroker(tmp / "mosquitto")
        broker.start()
        try:
            pg_problem = pg_reachable()
            kinds = ["bare", "sqlite"] + (["postgresql", "postgresql x2"] if not pg_problem else [])
            if pg_problem:
                out["notes"].append(f"PostgreSQL skipped: {pg_problem}")
            for kind in kinds:
                r = ingest(broker, kind, args.devices, args.windows, tmp)
                out["ingest"].append(r)
                print(f"ingest {kind:14} {r['messages']:6}/{r['expected']} msgs in {r['seconds']:6}s = "
                      f"{r['msg_per_s']} msg/s (publisher {r['publisher_msg_per_s']} msg/s, {r['bytes_per_msg']} B)",
                      flush=True)
            bare = out["ingest"][0]["msg_per_s"] or 1
            for r in out["ingest"][1:]:
                r["ratio_to_bare"] = round((r["msg_per_s"] or 0) / bare, 2)
            if not args.skip_rollout:
                out["rollout"] = r2 = rollout(broker, args.devices, tmp)
                print(f"rollout: a 50 KB model reached {r2['devices']} devices through stages 1,10,50,100 "
                      f"(soak 0) in {r2['seconds_to_all']} s (stages started at {r2['stage_started_at_s']} s); "
                      f"state {r2['final_state']}; controller RSS {r2['controller_rss_mb']} MB", flush=True)
        finally:
            broker.stop()
    print("\nsummary")
    for r in out["ingest"]:
        ratio = f"  ({r['ratio_to_bare']:.2f}x the bare subscriber)" if "ratio_to_bare" in r else ""
        print(f"  ingest {r['receiver']:14} {r['msg_per_s']:>7} msg/s{ratio}   target >= 5000")
    if out["rollout"]:
        r2 = out["rollout"]
        print(f"  rollout to {r2['devices']} devices: {r2['seconds_to_all']} s   target <= 60 s")
        print(f"  controller RSS: {out['rollout']['controller_rss_mb']} MB")
    for n in out["notes"]:
        print("  note:", n)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        run_publisher(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--collector":
        run_collector(*sys.argv[2:7])
    elif len(sys.argv) > 1 and sys.argv[1] == "--lite-fleet":
        run_lite_fleet(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
