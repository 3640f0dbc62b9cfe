"""The device registry: every broker account the fleet knows, in ``<home>/provision/registry.json``.

The registry holds no plaintext secret: password hashes (Mosquitto's ``$7$`` format),
certificate serials and fingerprints. Plaintext passwords of the workstation's own service
accounts (controller, publisher) live in ``<home>/provision/secrets/<name>.password`` (0600);
device secrets exist only in the device's bundle.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from device_agent.errors import ConfigError
from device_agent.protocol.topics import check_segment
from edgeml.errors import UsageError
from edgeml.provision.acl import Account
from edgeml.provision.secrets import write_public

REGISTRY_VERSION = 1
SERVICE_ACCOUNTS = ("controller", "publisher")
AUTH_MODES = ("cert", "password")


@dataclass
class Entry:
    """One account. ``auth`` is ``cert`` (mutual TLS, CN = name) or ``password``."""

    name: str
    role: str
    fleet: str
    auth: str
    group: Optional[str] = None
    password_hash: Optional[str] = None
    cert_serial: Optional[str] = None  # decimal string (JSON numbers lose precision past 2**53)
    cert_fingerprint: Optional[str] = None
    cert_not_after: Optional[str] = None
    created_at: float = field(default_factory=time.time)
    revoked_at: Optional[float] = None
    # certificates replaced by a re-provisioning: [[serial, revoked_at], ...], kept on the CRL
    superseded_serials: list[list[Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def account(self) -> Account:
        return Account(self.name, self.role, self.fleet)

    def public_view(self) -> dict[str, Any]:
        """What may be printed: everything but the password hash."""
        view = asdict(self)
        view.pop("password_hash", None)
        view["active"] = self.active
        return view


def validate_device_id(device_id: str) -> str:
    """A device id is one topic segment and not a service account name. Raises UsageError."""
    try:
        check_segment(device_id, "device id")
    except ConfigError as exc:
        raise UsageError(exc.message, hint=exc.hint) from exc
    if device_id in SERVICE_ACCOUNTS:
        raise UsageError(f"{device_id!r} is reserved for the workstation's own account", hint="pick another device id")
    return device_id


class Registry:
    """Load with :meth:`open`; change entries; :meth:`save` writes atomically."""

    def __init__(self, path: Path, entries: dict[str, Entry] | None = None) -> None:
        self.path = path
        self.entries: dict[str, Entry] = entries or {}

    @classmethod
    def open(cls, path: Path) -> Registry:
        """Read the registry (empty when the file does not exist). Raises UsageError when unreadable."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") != REGISTRY_VERSION:
                raise ValueError(f"registry version {raw.get('version')!r}, expected {REGISTRY_VERSION}")
            entries = {name: Entry(**value) for name, value in raw["accounts"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"the device registry {path} cannot be read: {exc}", hint="restore it from a backup"
            ) from exc
        return cls(path, entries)

    def save(self) -> None:
        data = {"version": REGISTRY_VERSION, "accounts": {n: asdict(e) for n, e in sorted(self.entries.items())}}
        write_public(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self.entries.values(), key=lambda e: e.name))

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def devices(self, include_revoked: bool = True) -> list[Entry]:
        return [e for e in self if e.role == "device" and (include_revoked or e.active)]

    def active(self) -> list[Entry]:
        return [e for e in self if e.active]

    def add(self, entry: Entry, replace: bool = False) -> None:
        """Add ``entry``. Raises UsageError if an active account of that name exists and not ``replace``."""
        old = self.entries.get(entry.name)
        if old is not None and old.active and not replace:
            raise UsageError(
                f"{entry.role} {entry.name!r} is already provisioned",
                hint=f"use --force to issue new credentials (the old ones stop working), "
                f"or `edgeml device revoke {entry.name}` first",
            )
        if old is not None:
            entry.superseded_serials = list(old.superseded_serials)
            if old.cert_serial:
                entry.superseded_serials.append([old.cert_serial, old.revoked_at or time.time()])
        self.entries[entry.name] = entry

    def revoke(self, name: str) -> Entry:
        """Mark ``name`` revoked. Raises UsageError for an unknown or service account."""
        entry = self.entries.get(name)
        if entry is None or entry.role != "device":
            known = ", ".join(e.name for e in self.devices(include_revoked=False)) or "none"
            raise UsageError(f"no device {name!r} in the registry", hint=f"provisioned devices: {known}")
        if entry.revoked_at is None:
            entry.revoked_at = time.time()
        return entry

    def revoked_certificates(self) -> list[tuple[int, dt.datetime]]:
        """``(serial, revoked_at)`` of every revoked certificate, for the CRL.

        A device re-provisioned with ``--force`` keeps its old serials here too.
        """
        out = []
        for entry in self:
            for serial, when in _revoked_serials(entry):
                out.append((serial, dt.datetime.fromtimestamp(when, dt.timezone.utc)))
        return out


def _revoked_serials(entry: Entry) -> list[tuple[int, float]]:
    serials = [(int(s), float(w)) for s, w in entry.superseded_serials]
    if entry.revoked_at is not None and entry.cert_serial:
        serials.append((int(entry.cert_serial), entry.revoked_at))
    return serials
