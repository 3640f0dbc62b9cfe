"""The configuration as shipped (no test overrides for the user): Mosquitto started as root drops
to the `mosquitto` user, which must still read the password file, the ACL, the key and the CRL
— also after `edgeml device revoke` rewrote them and the broker reloaded."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeml.provision.broker import write_broker_config
from edgeml.provision.device import provision_device, revoke_device
from edgeml.provision.paths import ProvisionPaths
from tests.brokers import MosquittoBroker
from tests.provision.conftest import make_home, options_for_test
from tests.provision.helpers import connect


def _mosquitto_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        return None


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder the unprivileged broker user can traverse (pytest's tmp folders are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="edgeml-broker-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a broker started as root drops privileges")
@pytest.mark.skipif(_mosquitto_user() is None, reason="no mosquitto user (the Debian package creates it)")
def test_root_started_broker_drops_to_mosquitto_and_still_reads_its_files(open_dir: Path, tmp_path: Path) -> None:
    user = _mosquitto_user()
    assert user is not None
    settings = make_home(tmp_path / "home")
    paths = ProvisionPaths.from_settings(settings)
    opts = options_for_test(open_dir)
    opts.user = "mosquitto"
    persist = open_dir / "persist"
    persist.mkdir()
    os.chown(persist, user.pw_uid, user.pw_gid)
    out = open_dir / "broker"
    files = write_broker_config(paths, out, opts)
    out.chmod(0o755)
    for secret in (files.password_file, files.server_key):
        st = secret.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (user.pw_uid, 0o600)
    provision_device(paths, "dev-q", tmp_path / "b", broker=f"mqtts://127.0.0.1:{opts.tls_port}", auth="password")
    provision_device(paths, "dev-k", tmp_path / "b", broker=f"mqtts://127.0.0.1:{opts.tls_port}", auth="password")
    password = (tmp_path / "b" / "dev-q" / "agent.toml.in").read_text().split('password = "')[1].split('"')[0]
    assert files.password_file.stat().st_uid == user.pw_uid  # ownership kept when refreshed
    broker = MosquittoBroker(tmp_path / "mosquitto", port=opts.local_port, config=files.conf.read_text())
    broker.start()
    try:
        assert broker.proc is not None
        status = Path(f"/proc/{broker.proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) == user.pw_uid  # it really runs as mosquitto
        conn = connect(opts.tls_port, username="dev-q", password=password, ca=files.ca_cert)
        assert conn.ok, conn.reason + broker.log_path.read_text()[-1000:]
        conn.close()
        revoke_device(paths, "dev-q")
        broker.reload()
        assert broker.proc is not None and broker.proc.poll() is None, broker.log_path.read_text()[-1000:]
        assert not connect(opts.tls_port, username="dev-q", password=password, ca=files.ca_cert).ok
        k_password = (tmp_path / "b" / "dev-k" / "agent.toml.in").read_text().split('password = "')[1].split('"')[0]
        other = connect(opts.tls_port, username="dev-k", password=k_password, ca=files.ca_cert)
        assert other.ok, other.reason + broker.log_path.read_text()[-1000:]
        other.close()
    finally:
        broker.stop()
