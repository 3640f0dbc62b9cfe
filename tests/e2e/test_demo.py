"""The reduced demo end to end through the real CLI (6 devices, short soak, few epochs), its
clean-up on Ctrl-C, and the outcome rule it reports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from edgeml.demo import V1, V2, V3, RolloutSummary, check_outcome, stage_log

EDGEML = str(Path(sys.executable).with_name("edgeml"))
REDUCED = ["--devices", "6", "--epochs", "3", "--soak", "2s", "--stages", "50,100", "--rate", "80",
           "--telemetry-interval", "2"]


def _listening(url: str) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", int(u.port or 0)), timeout=0.5):
            return True
    except OSError:
        return False


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line mentions ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EDGEML_HOME", None)
    env.pop("EDGEML_BROKER", None)
    env["COLUMNS"] = "140"
    return env


@dataclass
class DemoRun:
    home: Path
    proc: subprocess.CompletedProcess[str]
    seconds: float


@pytest.fixture(scope="module")
def reduced_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One reduced demo through the real CLI, shared by the tests of this module."""
    home = tmp_path_factory.mktemp("demo") / "home"
    t0 = time.monotonic()
    proc = subprocess.run([EDGEML, "demo", "--home", str(home), *REDUCED, "--json"], capture_output=True,
                          text=True, timeout=300, env=_env(), check=False)
    return DemoRun(home, proc, time.monotonic() - t0)


@pytest.mark.slow
def test_reduced_demo_ends_with_v2_everywhere_and_v3_nowhere(reduced_demo: DemoRun) -> None:
    proc, home = reduced_demo.proc, reduced_demo.home
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["versions"] == {V2: 6}, result["versions"]
    assert "runs on all 6 devices" in result["verdict"]
    by_version = {r["version"]: r for r in result["rollouts"]}
    assert by_version[V1]["state"] == "completed"
    assert by_version[V2]["state"] == "completed"
    assert [(s["pct"], s["outcome"]) for s in by_version[V2]["stage_log"]] == [(50.0, "passed"), (100.0, "passed")]
    v3 = by_version[V3]
    assert v3["state"] == "halted" and v3["stage_index"] == 0
    failed = [g for g in v3["stage_log"][0]["gates"] if g["ok"] is False]
    assert [g["name"] for g in failed] == ["p95_latency_ratio"] and failed[0]["value"] > 1.2
    # the story is in the project home, and everything it started is stopped
    assert (home / "repository" / "metadata" / "root.json").is_file()
    assert (home / "runs" / f"digits-{V2}-convert" / "report.json").is_file()
    assert not _listening(result["dashboard"]), "the dashboard still answers after the demo ended"
    assert not _listening(result["broker"]), "the broker still listens after the demo ended"
    assert not _processes_mentioning(str(home)), "a process started by the demo outlived it"
    # progress and the summary went to stderr (stdout holds only the JSON); TensorFlow's chatter to the log
    assert "rollout" in proc.stderr and "OK:" in proc.stderr
    # the variant table of v1's conversion, with the chosen variant named
    assert "tflite-int8" in proc.stderr and "onnx-fp32" in proc.stderr and "selected: " in proc.stderr
    assert "WARNING:tensorflow" not in proc.stderr and "fully_quantize" not in proc.stderr
    assert (home / "runs" / "models.log").is_file()
    print(f"reduced demo took {reduced_demo.seconds:.0f}s: {result['timings']}")


@pytest.mark.slow
def test_a_second_run_in_the_same_home_is_refused(reduced_demo: DemoRun) -> None:
    proc = subprocess.run([EDGEML, "demo", "--home", str(reduced_demo.home), *REDUCED], capture_output=True,
                          text=True, timeout=60, env=_env(), check=False)
    assert proc.returncode == 2
    assert "already holds a repository" in proc.stderr and "--models-from" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ctrl_c_stops_everything_the_demo_started(reduced_demo: DemoRun, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cmd = [EDGEML, "demo", "--home", str(home), *REDUCED, "--models-from", str(reduced_demo.home), "--keep-running"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    assert proc.stdout is not None
    dashboard = None
    lines = []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            lines.append(line)
            if "dashboard: http://" in line:
                dashboard = line.split("dashboard:", 1)[1].split()[0]
            if dashboard and "agents up" in line:
                break
            assert time.monotonic() < deadline, "the fleet did not start in time:\n" + "".join(lines[-40:])
        assert dashboard is not None, "no dashboard line:\n" + "".join(lines[-40:])
        assert "reusing the models" in "".join(lines)
        assert _listening(dashboard)
        assert _processes_mentioning(str(home / "broker")), "no private broker process seen"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, f"exit code {proc.returncode}:\n{rest[-2000:]}"
    assert not _listening(dashboard), "the dashboard still answers after Ctrl-C"
    assert not _processes_mentioning(str(home / "broker")), "the private broker outlived Ctrl-C"


def _rollout(version: str, state: str, stage_index: int = 0) -> RolloutSummary:
    return RolloutSummary(version, None, state, [10.0, 50.0, 100.0], stage_index, None, [], 1.0)


def test_outcome_rule() -> None:
    good = [_rollout(V1, "completed", 0), _rollout(V2, "completed", 2), _rollout(V3, "halted", 0)]
    ok, verdict = check_outcome({V2: 20}, 20, good)
    assert ok and "20 devices" in verdict
    ok, verdict = check_outcome({V2: 19, V3: 1}, 20, good)
    assert not ok and "19 of 20 devices run 2.0.0" in verdict and "1 devices still run 3.0.0" in verdict
    late = [good[0], good[1], _rollout(V3, "halted", 1)]
    ok, verdict = check_outcome({V2: 20}, 20, late)
    assert not ok and "not the first" in verdict
    ok, verdict = check_outcome({V2: 20}, 20, good[:2])
    assert not ok and "3.0.0 rollout is missing" in verdict


def test_stage_log_from_history() -> None:
    gates_ok = [{"name": "p95_latency_ratio", "op": "<=", "threshold": 1.2, "value": 1.01, "ok": True}]
    gates_bad = [{"name": "p95_latency_ratio", "op": "<=", "threshold": 1.2, "value": 6.0, "ok": False}]
    record = {
        "stages": [10, 50, 100], "state": "halted",
        "history": [
            {"event": "created", "t": 0.0},
            {"event": "stage_started", "stage": 0, "t": 1.0},
            {"event": "stage_passed", "gates": gates_ok, "t": 5.0},
            {"event": "stage_started", "stage": 1, "t": 5.0},
            {"event": "halted", "gates": gates_bad, "t": 8.5},
        ],
    }
    log = stage_log(record)
    assert [(s.stage, s.pct, s.outcome, s.seconds) for s in log] == [(0, 10.0, "passed", 4.0), (1, 50.0, "halted", 3.5)]
    assert log[1].gates == gates_bad


def test_history_lines_name_each_stage_and_the_deciding_gates() -> None:
    from edgeml.demo import _history_lines

    gates_bad = [{"name": "p95_latency_ratio", "op": "<=", "threshold": 1.2, "value": 6.0, "ok": False}]
    record = {
        "version": V3, "previous_version": V2, "stages": [10, 50, 100],
        "history": [
            {"event": "created", "t": 0.0},
            {"event": "stage_started", "stage": 0, "t": 1.0},
            {"event": "halted", "detail": "stage 1 (10%): p95_latency_ratio=6", "gates": gates_bad, "t": 8.5},
        ],
    }
    assert _history_lines(record, 0) == [
        "3.0.0: stage 1/3 (10%) started",
        "3.0.0: HALTED at stage 1/3 (10%); gates: p95_latency_ratio 6 <= 1.2 ✗",
        "3.0.0: its cohort goes back to 2.0.0",
    ]
    assert _history_lines(record, 3) == []  # nothing new since the last poll
