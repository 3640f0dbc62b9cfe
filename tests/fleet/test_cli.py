"""The fleet CLI: CliRunner on a real store, and `edgeml fleet serve` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.fleet.collector import state_row, telemetry_row
from edgeml.fleet.store import Store
from tests.fleet.helpers import state, telemetry

EDGEML = str(Path(sys.executable).parent / "edgeml")


def run(home: Path, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=True)
    return result


def seeded(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = Store(url)
    now = time.time()
    store.write_batch(
        states=[state_row(f"d{i}", state(f"d{i}", "1.0.0").to_json(), now) for i in range(5)],
        telemetry=[telemetry_row(f"d{i}", telemetry(f"d{i}", 1, ms=3.0).to_json(), now) for i in range(5)],
    )
    store.close()
    return tmp_path / "home", url


def test_ls_show_and_summary(tmp_path: Path) -> None:
    home, url = seeded(tmp_path)
    r = run(home, "fleet", "ls", "--store", url, "--json")
    assert r.exit_code == 0, r.output
    devices = json.loads(r.output)["devices"]
    assert [d["device_id"] for d in devices] == [f"d{i}" for i in range(5)]
    assert devices[0]["version"] == "1.0.0" and devices[0]["p95_ms"] is not None
    r = run(home, "fleet", "ls", "--store", url)
    assert "d4" in r.output and "digits@1.0.0" in r.output and "5 devices, 5 online" in r.output
    r = run(home, "fleet", "show", "d2", "--store", url, "--json")
    assert json.loads(r.output)["device"]["device_id"] == "d2"
    r = run(home, "telemetry", "summary", "digits", "--store", url, "--json")
    v = json.loads(r.output)["versions"][0]
    assert v["version"] == "1.0.0" and v["devices"] == 5 and v["requests"] == 500
    assert 2.0 < v["p95_ms"] < 4.0 and v["error_rate"] == 0
    r = run(home, "telemetry", "summary", "digits", "--store", url)
    assert "latency p50" in r.output


def test_rollout_start_status_and_commands(tmp_path: Path) -> None:
    home, url = seeded(tmp_path)
    r = run(home, "rollout", "start", "digits", "2.0.0", "--stages", "20,100", "--soak", "0", "--store", url,
            "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["previous_version"] == "1.0.0" and st["state"] == "running" and st["stages"] == [20, 100]
    again = run(home, "rollout", "start", "digits", "3.0.0", "--store", url)
    assert again.exit_code != 0 and "already has an active rollout" in str(again.exception)
    r = run(home, "rollout", "pause", "digits", "--wait", "0", "--store", url, "--json")
    assert json.loads(r.output)["result"] == "queued"
    r = run(home, "rollout", "status", "--store", url, "--json")
    assert json.loads(r.output)["rollouts"][0]["id"] == st["id"]
    r = run(home, "rollout", "status", "digits", "--store", url)
    assert "digits 1.0.0 -> 2.0.0" in r.output


def test_bad_input_exits_2_with_a_hint(tmp_path: Path) -> None:
    home, url = seeded(tmp_path)
    p = subprocess.run([EDGEML, "--home", str(home), "rollout", "start", "digits", "2.0.0", "--gate", "latency<1",
                        "--store", url], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown metric" in p.stderr and "hint:" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([EDGEML, "--home", str(home), "rollout", "status", "nope", "--store", url],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no rollout 'nope'" in p.stderr


def test_serve_runs_the_controller_until_sigterm(tmp_path: Path, shared_broker: Any) -> None:
    home, url = seeded(tmp_path)
    env = dict(os.environ, EDGEML_STORE=url)
    proc = subprocess.Popen([EDGEML, "--home", str(home), "--broker", shared_broker.url, "--fleet", "cli",
                             "fleet", "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "dashboard http://127.0.0.1:" in line, line
        base = line.split("dashboard ")[1].strip().rstrip("/")
        with urllib.request.urlopen(base + "/api/fleet", timeout=5) as resp:
            assert len(json.loads(resp.read())["devices"]) == 5
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            assert b"edgeml_fleet_devices 5" in resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopping the controller" in out


@pytest.mark.slow
def test_simulate_runs_real_agents_for_a_while(tmp_path: Path, shared_broker: Any) -> None:
    from edgeml.release.keys import init_keys
    from edgeml.settings import load_settings

    home = tmp_path / "home"
    init_keys(load_settings(home, env={}, broker=shared_broker.url, fleet="clisim"))
    p = subprocess.run([EDGEML, "--home", str(home), "--broker", shared_broker.url, "--fleet", "clisim", "fleet",
                        "simulate", "--devices", "3", "--duration", "4", "--prefix", "cs"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "starting 3 agents" in p.stdout and "versions -: 3" in p.stdout and "stopping the agents" in p.stdout
    bad = subprocess.run([EDGEML, "--home", str(home), "fleet", "simulate", "--fault-version", "3.0.0:slow=2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "KNOB=NUMBER" in bad.stderr and "hint:" in bad.stderr
