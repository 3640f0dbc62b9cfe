"""`edgeml broker config` and `edgeml device provision|revoke|ls` through the CLI: files,
modes, bundles, clear errors, and no secret on the screen."""

from __future__ import annotations

import hashlib
import json
import stat
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.provision.passwd import parse_password_file, verify_password
from tests.provision.conftest import make_home


def run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    return result.exit_code, result.output


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("cli") / "home"
    make_home(h)
    return h


def test_provision_writes_bundle_and_never_prints_secrets(home: Path, tmp_path: Path) -> None:
    code, out = run(home, "broker", "config", "--out", str(tmp_path / "broker"), "--user", "root")
    assert code == 0, out
    controller_pw = (home / "provision" / "secrets" / "controller.password").read_text().strip()
    assert mode(home / "provision" / "secrets" / "controller.password") == 0o600
    assert controller_pw not in out

    code, out = run(home, "device", "provision", "cam-1", "--group", "canary", "--out", str(tmp_path / "b"),
                    "--broker-url", "mqtts://broker.lan:8884", "--model", "digits", "--json")
    assert code == 0, out
    info = json.loads(out)
    folder = Path(info["folder"])
    key = (folder / "client.key").read_text()
    assert "PRIVATE KEY" in key and key not in out
    assert mode(folder / "client.key") == 0o600
    assert mode(folder / "agent.toml.in") == 0o600
    assert mode(Path(info["bundle"])) == 0o600
    # the bundle and its checksum
    bundle = Path(info["bundle"])
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == info["sha256"]
    assert (tmp_path / "b" / "cam-1.tar.gz.sha256").read_text() == f"{info['sha256']}  cam-1.tar.gz\n"
    with tarfile.open(bundle) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {f"cam-1/{n}" for n in ("agent.toml.in", "ca.crt", "root.json", "client.crt", "client.key",
                                    "install.sh", "edgeml-agent.service")} <= set(members)
    assert members["cam-1/client.key"].mode & 0o777 == 0o600
    assert members["cam-1/install.sh"].mode & 0o777 == 0o755
    # the trusted root is the release repository's
    assert json.loads((folder / "root.json").read_text())["signed"]["_type"] == "root"
    toml = (folder / "agent.toml.in").read_text()
    for line in ('device_id = "cam-1"', 'broker = "mqtts://broker.lan:8884"', 'group = "canary"',
                 'model = "digits"', 'cert_file = "@CONF_DIR@/client.crt"', 'trusted_root = "@CONF_DIR@/root.json"'):
        assert line in toml
    # the broker folder now lets cam-1 in (ACL) — by certificate, so not in the password file
    acl = (tmp_path / "broker" / "acl").read_text()
    assert "user cam-1" in acl and "topic write edgeml/default/devices/cam-1/telemetry" in acl
    assert "cam-1" not in (tmp_path / "broker" / "passwd").read_text()


def test_password_device_and_listing(home: Path, tmp_path: Path) -> None:
    run(home, "broker", "config", "--out", str(tmp_path / "broker"), "--user", "root")
    code, out = run(home, "device", "provision", "pw-1", "--auth", "password", "--out", str(tmp_path / "b"))
    assert code == 0, out
    toml = (tmp_path / "b" / "pw-1" / "agent.toml.in").read_text()
    password = next(line.split('"')[1] for line in toml.splitlines() if line.startswith("password ="))
    assert password not in out
    assert 'broker = "mqtts://127.0.0.1:8883"' in toml and 'username = "pw-1"' in toml
    hashes = parse_password_file((tmp_path / "broker" / "passwd").read_text())
    assert verify_password(password, hashes["pw-1"])
    code, out = run(home, "device", "ls", "--json")
    names = {d["name"]: d for d in json.loads(out)["devices"]}
    assert names["pw-1"]["active"] and "password_hash" not in names["pw-1"]
    assert hashes["pw-1"] not in out


def test_clear_errors_exit_2(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeml.cli import run_cli

    def rc(*args: str) -> int:
        try:
            run_cli(["--home", str(home), *args])
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    out = str(tmp_path / "b")
    assert rc("device", "provision", "dup-1", "--out", out) == 0
    assert rc("device", "provision", "dup-1", "--out", out) == 2  # already provisioned
    assert rc("device", "provision", "dup-1", "--out", out, "--force") == 0
    assert rc("device", "provision", "bad/id", "--out", out) == 2
    assert rc("device", "provision", "publisher", "--out", out) == 2
    assert rc("device", "provision", "x-1", "--out", out, "--broker-url", "mqtt://plain:1883") == 2
    assert rc("device", "revoke", "nobody") == 2
    assert rc("broker", "config", "--out", out, "--tls-port", "8884") == 2  # clash with the mTLS port
    empty = tmp_path / "empty-home"
    with pytest.raises(SystemExit) as exc:
        run_cli(["--home", str(empty), "device", "provision", "d-1", "--out", out])
    assert exc.value.code == 2  # no release repository: no trusted root to install
    assert "no trusted root metadata" in capsys.readouterr().err
