"""`edgeml-agent run|status` as a person uses them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from device_agent.agent import Agent
from device_agent.cli import main
from tests.agent.conftest import agent_config
from tests.agent.harness import wait_until
from tests.agent.modelkit import make_manifest, write_manifest

AGENT = [sys.executable, "-m", "device_agent.cli"]


def test_run_refuses_a_bad_config_with_a_clear_message(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ndevice_id = "dev 1"\n')
    out = subprocess.run([*AGENT, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "device_id 'dev 1' is not a valid topic segment" in out.stderr and "hint:" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run([*AGENT, "status", "--config", str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert out.returncode == 2 and "cannot read agent config" in out.stderr


def test_status_reads_the_data_folder(
    tmp_path: Path, shared_broker: Any, tiny_models: dict[str, Path], capsys: Any
) -> None:
    manifest = write_manifest(tiny_models["good1"], make_manifest(tiny_models["good1"], version="1.0.0"))
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'device_id = "dev-cli"\nbroker = "{shared_broker.url}"\ndata_dir = "data"\n'
        f'bootstrap_model = "{tiny_models["good1"]}"\nbootstrap_manifest = "{manifest}"\n'
    )
    assert main(["status", "--config", str(toml)]) == 0
    assert "(no model)" in capsys.readouterr().out
    cfg = agent_config(
        tmp_path,
        shared_broker.url,
        device_id="dev-cli",
        data_dir=tmp_path / "data",
        bootstrap_model=tiny_models["good1"],
        bootstrap_manifest=manifest,
    )
    agent = Agent(cfg).start()
    try:
        wait_until(lambda: agent.active is not None, what="bootstrap model")
    finally:
        agent.stop()
    assert main(["status", "--config", str(toml), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["active"]["version"] == "1.0.0" and st["active"]["model"] == "tiny" and st["update_state"] == "idle"
    assert main(["status", "--config", str(toml)]) == 0
    text = capsys.readouterr().out
    assert "serving     tiny 1.0.0" in text and "update      idle" in text
