"""The bundle's agent.toml is the agent's own format: both auth modes load with the agent's
loader, and a password device's agent connects over TLS to the generated broker and reports."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent.agent.config import load_config
from device_agent.protocol.messages import ReportedState
from device_agent.protocol.topics import Topics
from edgeml.provision.bundle import fill
from tests.provision.conftest import Fleet
from tests.provision.helpers import connect, subscribe, wait_for

T = Topics("default")


def install_config(folder: Path, etc: Path, data: Path) -> Path:
    """What install.sh does with agent.toml.in, for a test that does not run install.sh."""
    etc.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "root.json", "client.crt", "client.key"):
        if (folder / name).exists():
            (etc / name).write_bytes((folder / name).read_bytes())
    text = fill((folder / "agent.toml.in").read_text(), {"CONF_DIR": str(etc), "DATA_DIR": str(data)})
    path = etc / "agent.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("name", ["dev-a", "dev-p"])
def test_bundle_config_loads_with_the_agents_loader(fleet: Fleet, tmp_path: Path, name: str) -> None:
    cfg = load_config(install_config(fleet.device_dir(name), tmp_path / "etc", tmp_path / "data"))
    assert cfg.device_id == name and cfg.fleet == "default"
    assert cfg.broker_url.tls and cfg.ca_file == tmp_path / "etc" / "ca.crt"
    assert cfg.trusted_root == tmp_path / "etc" / "root.json"
    assert cfg.data_dir == tmp_path / "data"
    if fleet.devices[name].auth == "cert":
        assert cfg.cert_file == tmp_path / "etc" / "client.crt" and cfg.password is None
        assert cfg.broker_url.port == fleet.opts.mtls_port
    else:
        assert cfg.broker_url.username == name and cfg.password == fleet.password_of(name)
        assert cfg.broker_url.port == fleet.opts.tls_port


def test_password_device_agent_reports_over_tls(fleet: Fleet, tmp_path: Path) -> None:
    path = install_config(fleet.device_dir("dev-p"), tmp_path / "etc", tmp_path / "data")
    path.write_text(path.read_text().replace('http_address = "127.0.0.1:8080"', 'http_address = "127.0.0.1:0"'))
    ctl = connect(fleet.opts.local_port, username="controller", password=fleet.service_password("controller"))
    subscribe(ctl, T.state("dev-p"))
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "device_agent.cli", "run", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        def online() -> bool:
            return any(ReportedState.from_json(p).online for p in ctl.payloads(T.state("dev-p")) if p)

        assert wait_for(online, timeout=30), (tmp_path / "agent.log").read_text()[-2000:]
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
        ctl.close()
    # the password never reached the agent's log
    assert fleet.password_of("dev-p") not in (tmp_path / "agent.log").read_text()
