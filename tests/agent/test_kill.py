"""SIGKILL the agent (a real ``edgeml-agent run`` process) in every update state; after a restart
it serves a verified model at once and converges on the desired one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.agent.commands import read_status
from tests.agent.harness import Publisher, Watcher, wait_until

FLEET = "killtest"
STATES = ["downloading", "verifying", "staged", "activating", "probation"]
AGENT = [sys.executable, "-m", "device_agent.cli"]


@pytest.fixture(scope="module")
def kill_repo(
    shared_broker: Any, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Publisher, Watcher]]:
    pub = Publisher(tmp_path_factory.mktemp("kill-host"), shared_broker.url, tiny_models, fleet=FLEET)
    pub.publish("good1", "1.0.0")
    pub.publish("good2", "2.0.0")
    w = Watcher(shared_broker.host, shared_broker.port, fleet=FLEET)
    yield pub, w
    w.close()


def write_config(tmp_path: Path, device: str, broker_url: str, root: Path) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        "[agent]\n"
        f'device_id = "{device}"\nfleet = "{FLEET}"\nbroker = "{broker_url}"\n'
        f'data_dir = "data"\nhttp_address = "127.0.0.1:0"\ntrusted_root = "{root}"\n'
        "telemetry_interval = 1.0\nprobation_seconds = 1.0\nprobation_requests = 1000\n"
        "update_timeout = 3.0\nreconnect_min_s = 0.05\nreconnect_max_s = 0.5\nupdate_check_interval = 5.0\n"
    )
    return cfg


def spawn(cfg: Path, port_file: Path, pause: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEML_AGENT_PAUSE_IN"}
    if pause:
        env["EDGEML_AGENT_PAUSE_IN"] = pause
    port_file.unlink(missing_ok=True)
    log = open(cfg.parent / "agent.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [*AGENT, "run", "--config", str(cfg), "--port-file", str(port_file)],
        stdout=log,
        stderr=log,
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
    )


def get(port: int, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
@pytest.mark.parametrize("state", STATES)
def test_sigkill_in_each_update_state_recovers_and_converges(
    state: str, tmp_path: Path, shared_broker: Any, kill_repo: tuple[Publisher, Watcher]
) -> None:
    pub, watcher = kill_repo
    device = f"dev-kill-{state}"
    cfg = write_config(tmp_path, device, shared_broker.url, pub.root)
    port_file = tmp_path / "port"
    data = tmp_path / "data"
    logs = lambda: (tmp_path / "agent.log").read_text()[-3000:]  # noqa: E731
    watcher.set_desired(device, "1.0.0")
    proc = spawn(cfg, port_file, pause=f"{state}:2.0.0")
    try:
        wait_until(
            lambda: (
                (s := read_status(cfg))["update_state"] == "committed" and (s["active"] or {}).get("version") == "1.0.0"
            ),
            timeout=30,
            what="1.0.0 committed",
            diag=logs,
        )
        watcher.set_desired(device, "2.0.0")
        wait_until(lambda: (data / f"paused-{state}").exists(), timeout=30, what=f"paused in {state}", diag=logs)
        assert read_status(cfg)["update_state"] == state
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        (data / f"paused-{state}").unlink()
        tampered = False
        if state == "verifying":
            # bytes changed on disk while the agent was down (same length): the signed hash catches it
            for f in (data / "downloads").glob("*2.0.0*"):
                raw = bytearray(f.read_bytes())
                raw[len(raw) // 2] ^= 0xFF
                f.write_bytes(bytes(raw))
                tampered = True
            assert tampered, "no downloaded file to tamper with"
        # the last will marks the device offline
        wait_until(lambda: any(s.device_id == device and not s.online for s in watcher.of("state")), what="last will")

        proc = spawn(cfg, port_file)
        port = int(
            wait_until(lambda: port_file.exists() and port_file.read_text(), timeout=20, what="restart", diag=logs)
        )
        status, health = get(port, "/v1/health")
        assert status == 200 and health["version"] in ("1.0.0", "2.0.0"), health
        status, pred = get(port, "/v1/predict", json.dumps({"inputs": [0.2, 0.4, 0.6, 0.8]}).encode())
        assert status == 200 and pred["version"] in ("1.0.0", "2.0.0")
        wait_until(
            lambda: (
                (s := read_status(cfg))["update_state"] == "committed" and (s["active"] or {}).get("version") == "2.0.0"
            ),
            timeout=30,
            what="converged on 2.0.0",
            diag=logs,
        )
        status, pred = get(port, "/v1/predict", json.dumps({"inputs": [0.2, 0.4, 0.6, 0.8]}).encode())
        assert status == 200 and pred["version"] == "2.0.0"
        resumed = watcher.wait_for(
            lambda: [e for e in watcher.events() if e.device_id == device and e.event == "resume"], what="resume"
        )
        assert state in resumed[0].reason
        if tampered:
            assert any(
                e.device_id == device and "signed sha256" in e.reason for e in watcher.events()
            ), "the tampered download was not caught by its signed hash"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
