"""Device agent benchmark: everything measured side by side in one run on this machine.

1. In-process ``Agent.predict`` against a bare LiteRT ``set_tensor/invoke/get_tensor`` on the
   same model: the digits CNN (``edgeml train digits`` + ``edgeml convert``, selected variant)
   and a larger conv net (96x96x3). Interleaved rounds, best of each.
2. The HTTP predict endpoint under concurrent keep-alive load (``wrk -c8``): the agent
   (``edgeml-agent run``) against (a) the seed's design — Flask under gunicorn with a
   joblib-loaded scikit-learn RandomForest and scaler — and (b) a minimal stdlib
   ``ThreadingHTTPServer`` (TCP_NODELAY) around the same interpreter.
3. Agent RSS while serving, cold start to first prediction, and the size of a fresh venv with
   only the ``device`` extra (no TensorFlow).

Usage: ``python bench/agent.py [--convert-dir DIR] [--seconds 5] [--skip-venv]``. Needs ``wrk``
(``bash .ci/system-deps.sh wrk``) and the dev extra (flask, gunicorn).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable

TARGETS = {
    "predict_ratio_large": 1.05,
    "predict_ratio_digits": 2.0,
    "vs_seed_rps": 30.0,
    "vs_minimal_rps": 0.9,
    "p99_ms": 10.0,
    "rss_mb": 80.0,
    "cold_start_s": 1.0,
    "venv_mb": 150.0,
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- models
_LARGE_NET = r"""
import os, sys, json
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, keras
out = sys.argv[1]
keras.utils.set_random_seed(0)
inp = keras.Input((96, 96, 3), name="image")
h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
h = keras.layers.Conv2D(128, 3, strides=2, padding="same", activation="relu")(h)
h = keras.layers.Conv2D(128, 3, strides=2, padding="same", activation="relu")(h)
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
model.export(os.path.join(out, "export"), verbose=False)
data = tf.lite.TFLiteConverter.from_saved_model(os.path.join(out, "export")).convert()
open(os.path.join(out, "large.tflite"), "wb").write(data)
"""

_DIGITS = r"""
import sys
from pathlib import Path
from edgeml.pipeline.train import train
from edgeml.pipeline.convert import convert
out = Path(sys.argv[1])
train("digits", out / "model", recipe="cnn", seed=0, params={"epochs": 4, "patience": 0})
convert(out / "model", out / "convert", latency_runs=50)
"""


def digits_variant(work: Path, convert_dir: Path | None) -> tuple[Path, Path]:
    """(model file, manifest) of the selected digits variant; trains + converts when needed."""
    if convert_dir is None:
        convert_dir = work / "digits" / "convert"
        if not (convert_dir / "report.json").exists():
            log("training + converting the digits CNN (edgeml pipeline)...")
            subprocess.run(
                [PY, "-c", _DIGITS, str(work / "digits")],
                check=True,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    report = json.loads((convert_dir / "report.json").read_text())
    row = next(v for v in report["variants"] if v["name"] == report["selected"])
    return convert_dir / row["path"], convert_dir / row["manifest"]


def large_variant(work: Path) -> tuple[Path, Path]:
    """A 96x96x3 conv net (fp32 TFLite) with a manifest whose golden vectors come from LiteRT."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    d = work / "large"
    model = d / "large.tflite"
    if not model.exists():
        log("building the larger conv net (TensorFlow, in a subprocess)...")
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, "-c", _LARGE_NET, str(d)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    golden = []
    for _ in range(3):
        x = rng.uniform(0, 1, (1, 96, 96, 3)).astype(np.float32)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        golden.append(
            {"input": x[0].tolist(), "output": it.get_tensor(it.get_output_details()[0]["index"])[0].tolist()}
        )
    manifest = {
        "schema": "manifest/1.0",
        "name": "large",
        "version": "1.0.0",
        "format": "tflite",
        "quantization": "fp32",
        "filename": model.name,
        "task": "classification",
        "inputs": [{"name": "image", "shape": [-1, 96, 96, 3], "dtype": "float32"}],
        "outputs": [{"name": "probs", "shape": [-1, 10], "dtype": "float32"}],
        "labels": [str(i) for i in range(10)],
        "golden": golden,
        "golden_atol": 1e-4,
        "latency_budget_ms": 500.0,
    }
    man = d / "large.manifest.json"
    man.write_text(json.dumps(manifest))
    return model, man


# ----------------------------------------------------------------------------- 1. in-process
def bench_in_process(model: Path, manifest: Path, broker_url: str, work: Path, rounds: int = 15) -> dict[str, float]:
    """Best per-call time of interleaved rounds: the bare interpreter, the agent with its audit log
    off, and the agent as configured by default (audit log on). The audit log is written by a
    background thread; each round flushes it before the clock stops, so its cost is counted."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from device_agent.agent import Agent, AgentConfig

    spec = json.loads(manifest.read_text())["inputs"][0]
    shape = [1, *[max(d, 1) for d in spec["shape"][1:]]]
    x = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def bare() -> Any:
        it.set_tensor(i_in, x)
        it.invoke()
        return it.get_tensor(i_out)

    agents = {}
    for audit in (False, True):
        data = work / f"inproc-{model.stem}-{audit}"
        shutil.rmtree(data, ignore_errors=True)
        agents[audit] = Agent(
            AgentConfig(
                device_id=f"bench-{audit}",
                broker=broker_url,
                data_dir=data,
                http_address=None,
                bootstrap_model=model,
                bootstrap_manifest=manifest,
                telemetry_interval=10.0,
                audit_log=audit,
            )
        ).start()
    try:
        t0 = time.perf_counter()
        bare()
        one = time.perf_counter() - t0
        n = max(200, min(20000, int(0.15 / max(one, 1e-6))))
        fns = {
            "bare": (bare, None),
            "agent_no_audit": (lambda: agents[False].predict(x), None),
            "agent": (lambda: agents[True].predict(x), agents[True].audit),
        }
        best = dict.fromkeys(fns, 1e9)
        for _ in range(rounds):
            for name, (fn, audit_log) in fns.items():
                if audit_log is not None:
                    audit_log.flush()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                if audit_log is not None:
                    audit_log.flush()
                best[name] = min(best[name], (time.perf_counter() - t0) / n * 1e6)
    finally:
        for a in agents.values():
            a.stop()
    return {
        "bare_us": best["bare"],
        "agent_us": best["agent"],
        "agent_no_audit_us": best["agent_no_audit"],
        "ratio": best["agent"] / best["bare"],
        "ratio_no_audit": best["agent_no_audit"] / best["bare"],
    }


# ----------------------------------------------------------------------------- 2. HTTP
_MINIMAL = r"""
import json, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import numpy as np
from ai_edge_litert.interpreter import Interpreter
import threading
model, port = sys.argv[1], int(sys.argv[2])
it = Interpreter(model_path=model, num_threads=1)
it.allocate_tensors()
i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
shape = [int(d) for d in it.get_input_details()[0]["shape"]]
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        x = np.asarray(json.loads(body)["inputs"], dtype=np.float32).reshape(shape)
        with lock:
            it.set_tensor(i_in, x); it.invoke(); y = it.get_tensor(i_out)
        out = json.dumps({"output": y[0].tolist(), "label": int(y[0].argmax())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
class S(ThreadingHTTPServer):
    daemon_threads = True
S(("127.0.0.1", port), H).serve_forever()
"""

_SEED_APP = r"""
import joblib, numpy as np
from flask import Flask, request, jsonify
app = Flask(__name__)
scaler, forest = joblib.load(__MODEL__)

@app.post("/v1/predict")
def predict():
    x = np.asarray(request.get_json()["inputs"], dtype=np.float64).reshape(1, -1)
    proba = forest.predict_proba(scaler.transform(x))[0]
    return jsonify({"label": int(proba.argmax()), "confidence": float(proba.max())})
"""


def seed_model(work: Path) -> Path:
    """The seed's artefact: a StandardScaler + RandomForest on digits, saved with joblib."""
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import StandardScaler

    path = work / "seed" / "forest.joblib"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        x, y = load_digits(return_X_y=True)
        scaler = StandardScaler().fit(x)
        forest = RandomForestClassifier(n_estimators=200, random_state=0).fit(scaler.transform(x), y)
        joblib.dump((scaler, forest), path)
    return path


def wait_http(port: int, body: bytes, timeout: float = 30.0) -> float:
    """Seconds until POST /v1/predict answers 200."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/predict", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"server on {port} did not answer within {timeout}s")


def run_wrk(port: int, body: bytes, seconds: float, work: Path) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds:g}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/v1/predict"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "non2xx": float(errors.group(1)) if errors else 0.0}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def agent_toml(path: Path, broker_url: str, port: int, model: Path, manifest: Path, data: Path) -> Path:
    path.write_text(
        f'[agent]\ndevice_id = "bench"\nbroker = "{broker_url}"\ndata_dir = "{data}"\n'
        f'http_address = "127.0.0.1:{port}"\nbootstrap_model = "{model}"\nbootstrap_manifest = "{manifest}"\n'
        'log_level = "warning"\n'
    )
    return path


def bench_http(model: Path, manifest: Path, broker_url: str, work: Path, seconds: float) -> dict[str, Any]:
    import numpy as np

    sample = np.random.default_rng(2).uniform(0, 16, 64).round(2).tolist()
    body = json.dumps({"inputs": sample}).encode()
    results: dict[str, Any] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    # (a) the seed's design
    forest = seed_model(work)
    app_dir = work / "seed"
    (app_dir / "seed_app.py").write_text(_SEED_APP.replace("__MODEL__", repr(str(forest))))
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(PY).with_name("gunicorn")),
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(app_dir),
            "--log-level",
            "warning",
            "seed_app:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(port, body)
        results["seed"] = run_wrk(port, body, seconds, work)
    finally:
        stop(proc)

    # (c) the agent: first boot installs the factory model; a restart is the cold start
    data = work / "agent-http"
    shutil.rmtree(data, ignore_errors=True)
    agent_port = free_port()
    cfg = agent_toml(work / "agent.toml", broker_url, agent_port, model, manifest, data)
    cmd = [str(Path(PY).with_name("edgeml-agent")), "run", "--config", str(cfg)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(agent_port, body)
        results["first_boot_s"] = time.monotonic() - t0
    finally:
        stop(proc)
    t0 = time.monotonic()
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # (b) minimal stdlib server around the same interpreter; measured in alternation with the
    # agent (the machine's load moves; alternating short runs compares like with like)
    min_port = free_port()
    minimal = subprocess.Popen([PY, "-c", _MINIMAL, str(model), str(min_port)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_http(agent_port, body)
        results["cold_start_s"] = time.monotonic() - t0
        wait_http(min_port, body)
        runs: dict[str, list[dict[str, float]]] = {"minimal": [], "agent": []}
        slice_s = max(1.0, seconds / 3)
        for _ in range(3):
            runs["minimal"].append(run_wrk(min_port, body, slice_s, work))
            runs["agent"].append(run_wrk(agent_port, body, slice_s, work))
        for key, rs in runs.items():
            best = max(rs, key=lambda r: r["rps"])
            results[key] = {**best, "rps_runs": [round(r["rps"]) for r in rs], "p99_runs": [r["p99_ms"] for r in rs]}
        results["agent_rss_mb"] = rss_mb(agent.pid)
    finally:
        stop(agent)
        stop(minimal)
    return results


# ----------------------------------------------------------------------------- 3. venv size
def _tree_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def venv_size(work: Path) -> dict[str, Any]:
    """Two fresh venvs with only the device extra: as a person makes one (``python -m venv`` +
    ``pip install .[device]``: pip, setuptools and compiled bytecode included) and as a device
    image would (no pip inside, ``--no-compile``; bytecode only for what the agent imports,
    written on its first start)."""
    out: dict[str, Any] = {}
    for kind in ("standard", "lean"):
        venv = work / f"device-venv-{kind}"
        shutil.rmtree(venv, ignore_errors=True)
        log(f"creating a fresh {kind} venv with only the device extra...")
        if kind == "standard":
            subprocess.run([PY, "-m", "venv", str(venv)], check=True)
            cmd = [str(venv / "bin" / "pip"), "install", "-q", f"{ROOT}[device]"]
        else:
            subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True)
            cmd = [
                PY,
                "-m",
                "pip",
                "--python",
                str(venv / "bin" / "python"),
                "install",
                "-q",
                "--no-compile",
                f"{ROOT}[device]",
            ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the agent's imports (and bytecode for them, as on a first start)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import device_agent.agent.core, device_agent.serving.http, device_agent.updater, "
                "device_agent.runtime.tflite, ai_edge_litert.interpreter",
            ],
            check=True,
        )
        site = next((venv / "lib").glob("python*/site-packages"))
        tf = any(p.name.startswith("tensorflow") for p in site.iterdir())
        out[kind] = {"venv_mb": _tree_mb(venv), "has_tensorflow": tf}
    return out


# ----------------------------------------------------------------------------- main
def verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convert-dir", type=Path, default=None, help="an `edgeml convert` output of digits (reused)")
    ap.add_argument("--work", type=Path, default=ROOT / ".edgeml" / "bench-agent", help="scratch folder (cached)")
    ap.add_argument("--seconds", type=float, default=5.0, help="wrk duration per server")
    ap.add_argument("--skip-venv", action="store_true", help="skip the fresh device-venv size check")
    ap.add_argument("--only-http", action="store_true", help="only the HTTP comparison (quick re-runs)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `bash .ci/system-deps.sh wrk`", file=sys.stderr)
        return 2
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    from tests.brokers import MosquittoBroker

    broker = MosquittoBroker(Path(tempfile.mkdtemp(prefix="bench-mqtt-")))
    broker.start()
    res: dict[str, Any] = {}
    try:
        digits_model, digits_manifest = digits_variant(work, args.convert_dir)
        large_model, large_manifest = large_variant(work)
        if not args.only_http:
            log("in-process predict vs bare invoke...")
            res["inproc_digits"] = bench_in_process(digits_model, digits_manifest, broker.url, work)
            res["inproc_large"] = bench_in_process(large_model, large_manifest, broker.url, work)
        log("HTTP under wrk -c8 (seed design, minimal server, agent)...")
        res["http"] = bench_http(digits_model, digits_manifest, broker.url, work, args.seconds)
        if not args.skip_venv and not args.only_http:
            res["venv"] = venv_size(work)
    finally:
        broker.stop()
    res["machine"] = {"cpus": os.cpu_count(), "load1": os.getloadavg()[0], "digits_variant": digits_model.name}
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    h = res["http"]
    print(
        f"edgeml device agent benchmark ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"digits variant {digits_model.name})"
    )
    if "inproc_digits" in res:
        print(
            "\nin-process predict vs bare LiteRT invoke (same model, best of interleaved rounds; "
            "the agent's audit-log writing counted)"
        )
        for name, r, target in (
            ("digits CNN", res["inproc_digits"], TARGETS["predict_ratio_digits"]),
            ("larger conv net", res["inproc_large"], TARGETS["predict_ratio_large"]),
        ):
            print(
                f"  {name:16} bare {r['bare_us']:9.1f} us   agent {r['agent_us']:9.1f} us   "
                f"ratio {r['ratio']:5.2f}x  (target <= {target}x) {verdict(r['ratio'] <= target)}   "
                f"[audit log off: {r['agent_no_audit_us']:.1f} us, {r['ratio_no_audit']:.2f}x]"
            )
    print(
        f"\nHTTP POST /v1/predict, one digits sample, wrk -t2 -c8 keep-alive "
        f"(seed {args.seconds:g}s; minimal and agent alternating, best of 3 runs)"
    )
    for key, label in (
        ("seed", "seed: Flask+gunicorn+RF"),
        ("minimal", "minimal stdlib server"),
        ("agent", "edgeml-agent"),
    ):
        r = h[key]
        runs = f"   runs: {r['rps_runs']} req/s, p99 {r['p99_runs']} ms" if "rps_runs" in r else ""
        print(
            f"  {label:26} {r['rps']:9.0f} req/s   p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms"
            + (f"   non-2xx {r['non2xx']:.0f}" if r["non2xx"] else "")
            + runs
        )
    a = h["agent"]
    vs_seed, vs_min = a["rps"] / h["seed"]["rps"], a["rps"] / h["minimal"]["rps"]
    print(
        f"  agent vs seed        {vs_seed:7.1f}x  (target >= {TARGETS['vs_seed_rps']:g}x) "
        f"{verdict(vs_seed >= TARGETS['vs_seed_rps'])}"
    )
    print(
        f"  agent vs minimal     {vs_min:7.2f}x  (target >= {TARGETS['vs_minimal_rps']}x) "
        f"{verdict(vs_min >= TARGETS['vs_minimal_rps'])}"
    )
    print(
        f"  agent p99            {a['p99_ms']:7.2f} ms (target <= {TARGETS['p99_ms']:g} ms) "
        f"{verdict(a['p99_ms'] <= TARGETS['p99_ms'])}"
    )
    print("\nfootprint")
    print(
        f"  agent RSS while serving   {h['agent_rss_mb']:7.1f} MB (target <= {TARGETS['rss_mb']:g} MB) "
        f"{verdict(h['agent_rss_mb'] <= TARGETS['rss_mb'])}"
    )
    print(
        f"  cold start -> 1st answer  {h['cold_start_s']:7.2f} s  (target <= {TARGETS['cold_start_s']:g} s) "
        f"{verdict(h['cold_start_s'] <= TARGETS['cold_start_s'])}   first boot (installs the model) "
        f"{h['first_boot_s']:.2f} s"
    )
    if "venv" in res:
        for kind, label in (
            ("standard", "venv + pip install .[device]"),
            ("lean", "device image venv (no pip, no-compile)"),
        ):
            v = res["venv"][kind]
            ok = v["venv_mb"] <= TARGETS["venv_mb"] and not v["has_tensorflow"]
            print(
                f"  {label:40} {v['venv_mb']:7.1f} MB (target <= {TARGETS['venv_mb']:g} MB) {verdict(ok)}   "
                f"tensorflow: {v['has_tensorflow']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
