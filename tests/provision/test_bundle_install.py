"""A provisioned bundle, unpacked into a temporary folder and installed by its own install.sh
(pip pointed at this checkout, systemd skipped), starts an agent that connects to a Mosquitto
running the generated configuration over mutual TLS, reports its state, takes a signed release
and serves /v1/health."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from device_agent.protocol.messages import DesiredState, ReportedState
from device_agent.protocol.topics import Topics
from edgeml.provision.device import provision_device
from edgeml.settings import load_settings
from tests.provision.conftest import Fleet, build_fleet
from tests.provision.helpers import connect, publish, subscribe, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
T = Topics("default")


def publish_release(fleet: Fleet, model_path: Path, workdir: Path, version: str) -> None:
    """Sign and push a release with the publisher account over the broker's local listener."""
    from edgeml.release.publish import publish as publish_model
    from tests.agent.modelkit import make_manifest, write_manifest

    variant = workdir / "variant" / "tiny.tflite"
    variant.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, variant)
    write_manifest(variant, make_manifest(variant, name="tiny", version=version))
    password = fleet.service_password("publisher")
    settings = load_settings(
        fleet.settings.home, env={}, broker=f"mqtt://publisher:{password}@127.0.0.1:{fleet.opts.local_port}"
    )
    publish_model(settings, variant, name="tiny", version=version)


def health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_bundle_installs_and_runs_an_agent(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from tests.agent.modelkit import build_models

    models = build_models(Path(request.config.cache.mkdir("edgeml-agent-models")))
    fleet = build_fleet(tmp_path / "fleet", {})
    agent: subprocess.Popen[bytes] | None = None
    ctl = None
    try:
        result = provision_device(
            fleet.paths, "dev-x", tmp_path / "bundles", broker=f"mqtts://127.0.0.1:{fleet.opts.mtls_port}",
            auth="cert", group="canary", model="tiny", http_address="127.0.0.1:0",
        )
        fleet.broker.reload()  # the new device's access rules take effect (as `systemctl reload mosquitto`)
        # a release is waiting, and the controller asks dev-x to run it
        publish_release(fleet, models["good1"], tmp_path, "1.0.0")
        ctl = connect(fleet.opts.local_port, username="controller", password=fleet.service_password("controller"))
        assert ctl.ok, ctl.reason
        publish(ctl, T.desired("dev-x"), DesiredState(model="tiny", version="1.0.0", issued_at=time.time()).to_json(),
                retain=True)
        subscribe(ctl, T.state("dev-x"))

        # the board: only the tarball and its checksum arrive
        board = tmp_path / "board"
        board.mkdir()
        shutil.copy(result.bundle, board)
        shutil.copy(result.bundle.parent / f"{result.bundle.name}.sha256", board)
        with tarfile.open(board / result.bundle.name) as tar:
            tar.extractall(board, filter="data") if sys.version_info >= (3, 12) else tar.extractall(board)
        env = {
            **os.environ,
            "EDGEML_PREFIX": str(board / "opt"),
            "EDGEML_CONF_DIR": str(board / "etc"),
            "EDGEML_DATA_DIR": str(board / "data"),
            "EDGEML_PIP_SOURCE": str(REPO_ROOT),
            "EDGEML_SYSTEMD": "0",
        }
        started = time.monotonic()
        install = subprocess.run(
            ["sh", str(board / "dev-x" / "install.sh")], env=env, capture_output=True, text=True, timeout=300
        )
        assert install.returncode == 0, install.stdout + install.stderr
        assert time.monotonic() - started < 120
        assert "systemd not available" in install.stdout
        assert "start the agent with" in install.stdout
        etc = board / "etc"
        assert stat.S_IMODE((etc / "client.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((etc / "agent.toml").stat().st_mode) == 0o600
        assert "@CONF_DIR@" not in (etc / "agent.toml").read_text()
        venv_python = board / "opt" / "bin" / "python"
        probe = subprocess.run([str(venv_python), "-c", "import importlib.util as u; print(u.find_spec('tensorflow'))"],
                               capture_output=True, text=True, check=True)
        assert probe.stdout.strip() == "None"

        port_file = tmp_path / "http.port"
        log = (tmp_path / "agent.log").open("wb")
        agent = subprocess.Popen(
            [str(board / "opt" / "bin" / "edgeml-agent"), "run", "--config", str(etc / "agent.toml"),
             "--port-file", str(port_file)],
            stdout=log, stderr=subprocess.STDOUT, cwd=board,
        )

        def diag() -> str:
            return (tmp_path / "agent.log").read_text()[-3000:]

        assert wait_for(port_file.exists, timeout=30), diag()
        port = int(port_file.read_text())

        def states() -> list[ReportedState]:
            return [ReportedState.from_json(p) for p in ctl.payloads(T.state("dev-x")) if p]

        assert wait_for(lambda: any(s.online for s in states()), timeout=30), diag()
        first = [s for s in states() if s.online][0]
        assert first.device_id == "dev-x" and first.group == "canary"
        # the signed release arrives over mutual TLS and is served
        assert wait_for(lambda: health(port)[0] == 200, timeout=60), f"{health(port)}\n{diag()}"
        code, body = health(port)
        assert body["version"] == "1.0.0" and body["connected"] is True
        assert wait_for(lambda: any(s.version == "1.0.0" for s in states()), timeout=30), diag()
        # the root it trusts is the one from the bundle (the release repository's)
        trusted = json.loads((etc / "root.json").read_text())
        assert trusted == json.loads((fleet.settings.repo_dir / "metadata" / "root.json").read_text())
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
        if ctl is not None:
            ctl.close()
        fleet.broker.stop()
