"""Provisioning ("flashing") and revoking devices.

``provision_device`` creates a device identity (a client certificate from the fleet CA, or a
password), records it in the registry, writes the device's folder and one ``.tar.gz`` bundle
(with its SHA-256) holding ``agent.toml.in``, ``ca.crt``, the trusted ``root.json`` of the
update repository, the credential files (0600), ``install.sh`` and the systemd unit.
``revoke_device`` takes the access away (CRL and password file) and refreshes the broker folder;
the broker refuses the device after a reload.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from device_agent.protocol.broker import BrokerURL
from edgeml.errors import UsageError
from edgeml.provision.broker import refresh_access_files
from edgeml.provision.bundle import (
    INSTALL_SH,
    SYSTEMD_UNIT,
    DeviceIdentity,
    fill,
    render_agent_toml,
    write_tarball,
)
from edgeml.provision.passwd import hash_password
from edgeml.provision.paths import ProvisionPaths
from edgeml.provision.registry import AUTH_MODES, Entry, validate_device_id
from edgeml.provision.secrets import new_password, write_public, write_secret

DEFAULT_TLS_PORT = 8883
DEFAULT_MTLS_PORT = 8884


@dataclass
class ProvisionResult:
    """What was written for one device (paths and public facts only; nothing secret)."""

    device_id: str
    auth: str
    broker: str
    folder: Path
    bundle: Path
    sha256: str
    cert_fingerprint: Optional[str] = None
    broker_dir_refreshed: Optional[Path] = None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def find_trusted_root(repo_dir: Path | None) -> Path:
    """The newest ``N.root.json`` (or ``root.json``) in ``<repo_dir>/metadata``.

    Raises UsageError when the release repository has no root yet.
    """
    metadata = Path(repo_dir or ".") / "metadata"
    numbered = []
    if metadata.is_dir():
        for path in metadata.glob("*.root.json"):
            match = re.fullmatch(r"(\d+)\.root\.json", path.name)
            if match:
                numbered.append((int(match.group(1)), path))
    if numbered:
        return max(numbered)[1]
    if (metadata / "root.json").is_file():
        return metadata / "root.json"
    raise UsageError(
        f"no trusted root metadata in {metadata}",
        hint="create the release repository first (`edgeml keys init`), or pass --root FILE",
    )


def default_device_broker(settings_broker: str, auth: str) -> str:
    """The broker URL a device uses by default: the workstation's broker host over TLS
    (8884 with a client certificate, 8883 with a password)."""
    url = BrokerURL.parse(settings_broker)
    port = DEFAULT_MTLS_PORT if auth == "cert" else DEFAULT_TLS_PORT
    return f"mqtts://{url.host}:{port}"


def provision_device(
    paths: ProvisionPaths,
    device_id: str,
    out_dir: Path,
    *,
    broker: str,
    group: str | None = None,
    auth: str = "cert",
    model: str | None = None,
    http_address: str = "127.0.0.1:8080",
    root: Path | None = None,
    force: bool = False,
    version: str | None = None,
) -> ProvisionResult:
    """Create ``device_id``'s identity and bundle in ``out_dir``.

    Raises UsageError for a bad id or auth mode, an already provisioned device (unless
    ``force``: its old credentials stop working), or a missing trusted root.
    """
    validate_device_id(device_id)
    if auth not in AUTH_MODES:
        raise UsageError(f"unknown auth mode {auth!r}", hint=f"use one of {', '.join(AUTH_MODES)}")
    parsed = BrokerURL.parse(broker)
    if parsed.username or parsed.password:
        raise UsageError("the device broker URL must not carry credentials", hint="credentials go in the bundle")
    if not parsed.tls:
        raise UsageError(
            f"devices connect over TLS, but {broker} is plain MQTT",
            hint=f"use mqtts://{parsed.host}:{DEFAULT_MTLS_PORT if auth == 'cert' else DEFAULT_TLS_PORT}",
        )
    root_path = Path(root) if root else find_trusted_root(paths.repo_dir)
    if not root_path.is_file():
        raise UsageError(f"trusted root {root_path} does not exist", hint="pass the repository's root.json")
    if group is not None:
        validate_device_id(group)
    registry = paths.registry()
    existing = registry.get(device_id)
    if existing is not None and existing.active and not force:
        registry.add(Entry(device_id, "device", paths.fleet, auth))  # raises the "already provisioned" error
    ca = paths.ca()

    folder = Path(out_dir) / device_id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    entry = Entry(device_id, "device", paths.fleet, auth, group=group)
    if auth == "cert":
        issued = ca.issue_client(device_id)
        write_public(folder / "client.crt", issued.cert_pem)
        write_secret(folder / "client.key", issued.key_pem)
        entry.cert_serial = str(issued.serial)
        entry.cert_fingerprint = issued.fingerprint
        entry.cert_not_after = issued.not_after.isoformat()
    password = None
    if auth == "password":
        password = new_password()
        entry.password_hash = hash_password(password)

    ident = DeviceIdentity(device_id, paths.fleet, str(parsed), auth, group, model, http_address)
    if version is None:
        from edgeml import __version__ as version
    values = {"DEVICE_ID": device_id, "VERSION": str(version)}
    write_secret(folder / "agent.toml.in", render_agent_toml(ident, password))
    del password
    write_public(folder / "ca.crt", ca.cert_pem)
    write_public(folder / "root.json", root_path.read_bytes())
    write_public(folder / "install.sh", fill(INSTALL_SH, values), mode=0o755)
    write_public(folder / "edgeml-agent.service", fill(SYSTEMD_UNIT, values))

    registry.add(entry, replace=True)
    registry.save()
    refreshed = _refresh_broker(paths)
    bundle, digest = write_tarball(folder, Path(out_dir) / f"{device_id}.tar.gz")
    return ProvisionResult(
        device_id,
        auth,
        str(parsed),
        folder,
        bundle,
        digest,
        cert_fingerprint=entry.cert_fingerprint,
        broker_dir_refreshed=refreshed,
        files=sorted(p.name for p in folder.iterdir()),
    )


def revoke_device(paths: ProvisionPaths, device_id: str) -> dict[str, Any]:
    """Take ``device_id``'s access away: off the password file and the ACL, its certificate on the CRL.

    Refreshes the broker folder of the last ``edgeml broker config``; the broker refuses the
    device after a reload (SIGHUP). Raises UsageError for an unknown device.
    """
    registry = paths.registry()
    entry = registry.revoke(device_id)
    registry.save()
    paths.ca().write_crl(registry.revoked_certificates())
    refreshed = _refresh_broker(paths)
    return {
        "device_id": device_id,
        "auth": entry.auth,
        "revoked_at": entry.revoked_at,
        "cert_serial": entry.cert_serial,
        "broker_dir_refreshed": str(refreshed) if refreshed else None,
    }


def list_devices(paths: ProvisionPaths, include_revoked: bool = True) -> list[dict[str, Any]]:
    """The registry's devices as printable dicts (no secrets, no hashes)."""
    return [e.public_view() for e in paths.registry().devices(include_revoked=include_revoked)]


def _refresh_broker(paths: ProvisionPaths) -> Path | None:
    directory = paths.broker_dir()
    if directory is None:
        return None
    refresh_access_files(paths, directory)
    return directory
