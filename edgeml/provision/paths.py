"""Where provisioning keeps its state under the project home, and the workstation's own accounts.

``<home>/provision/``:
- ``ca/``             fleet CA (``ca.key`` 0600, ``ca.crt``, ``crl.pem``)
- ``broker/``         the broker's server certificate and key (0600)
- ``registry.json``   every account (hashes, serials; no plaintext secret), 0600
- ``secrets/``        plaintext passwords of the controller and publisher accounts (0600)
- ``broker-dir``      the folder the last ``edgeml broker config`` wrote, refreshed on changes
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from device_agent.protocol.broker import BrokerURL
from edgeml.errors import UsageError
from edgeml.provision.ca import FleetCA
from edgeml.provision.passwd import hash_password
from edgeml.provision.registry import SERVICE_ACCOUNTS, Entry, Registry
from edgeml.provision.secrets import new_password, write_public, write_secret


@dataclass(frozen=True)
class ProvisionPaths:
    """Provisioning state for one home and fleet. Build with :meth:`from_settings`."""

    home: Path
    fleet: str = "default"
    repo_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: object) -> ProvisionPaths:
        return cls(
            Path(settings.home),  # type: ignore[attr-defined]
            settings.fleet,  # type: ignore[attr-defined]
            Path(settings.repo_dir),  # type: ignore[attr-defined]
        )

    @property
    def root(self) -> Path:
        return self.home / "provision"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.json"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def ca(self) -> FleetCA:
        return FleetCA.load_or_create(self.root / "ca", self.fleet)

    def registry(self) -> Registry:
        return Registry.open(self.registry_path)

    # server certificate ----------------------------------------------------------
    def server_certificate(self, hostnames: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """``(cert_pem, key_pem)`` of the broker, issued once and re-issued when ``hostnames`` grow."""
        cert_path, key_path = self.root / "broker" / "server.crt", self.root / "broker" / "server.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
                have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
            except x509.ExtensionNotFound:
                have = set()
            issued_by_ca = cert.issuer == self.ca().cert.subject
            if issued_by_ca and all(h in have for h in hostnames):
                return cert_path.read_bytes(), key_path.read_bytes()
        issued = self.ca().issue_server(hostnames)
        write_public(cert_path, issued.cert_pem)
        write_secret(key_path, issued.key_pem)
        return issued.cert_pem, issued.key_pem

    # service accounts ---------------------------------------------------------------
    def ensure_service_accounts(self) -> None:
        """Create the controller and publisher accounts (random passwords, 0600) when missing."""
        registry = self.registry()
        changed = False
        for name in SERVICE_ACCOUNTS:
            secret_path = self.secrets_dir / f"{name}.password"
            entry = registry.get(name)
            if entry is not None and entry.active and secret_path.exists():
                continue
            password = new_password()
            write_secret(secret_path, password + "\n")
            registry.add(Entry(name, name, self.fleet, "password", password_hash=hash_password(password)), replace=True)
            changed = True
        if changed:
            registry.save()

    def service_password(self, name: str) -> str:
        """The plaintext password of a service account. Raises UsageError when not created yet."""
        path = self.secrets_dir / f"{name}.password"
        if not path.exists():
            raise UsageError(f"no {name} account yet", hint="run `edgeml broker config --out DIR` first")
        return path.read_text().strip()

    def service_url(self, name: str, broker: BrokerURL) -> BrokerURL:
        """``broker`` with the credentials of service account ``name`` (never print its repr)."""
        return BrokerURL(broker.host, broker.port, broker.tls, name, self.service_password(name))

    # the broker folder ----------------------------------------------------------------
    def remember_broker_dir(self, directory: Path, user: str) -> None:
        write_public(self.root / "broker-dir", json.dumps({"directory": str(directory), "user": user}) + "\n")

    def broker_dir(self) -> Path | None:
        """The folder of the last ``edgeml broker config`` (``None`` when none or gone)."""
        path = self.root / "broker-dir"
        if not path.exists():
            return None
        directory = Path(json.loads(path.read_text())["directory"])
        return directory if directory.is_dir() else None
