"""The update repository on the workstation: python-tuf metadata on disk, signed with the keys
of :mod:`edgeml.release.keystore`.

Layout under ``settings.repo_dir``::

    metadata/1.root.json, 2.root.json, …   every root version (devices walk them in order)
    metadata/root.json                      copy of the newest root (provision devices with it)
    metadata/N.targets.json, N.snapshot.json consistent snapshots (targets.json/snapshot.json: newest)
    metadata/timestamp.json
    targets/models/<name>/<version>/<file>  the model files

Snapshot lists targets metadata with version, length and sha256; timestamp does the same for
snapshot (so a device caps each download at the signed length and refuses mixed versions).
Expiry per role comes from ``edgeml.toml`` ``[release]`` (``timestamp_expiry = "1d"`` …).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Signed, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository as TufRepository

from device_agent.errors import DataError
from device_agent.fsutil import atomic_write_bytes
from device_agent.protocol.topics import Topics
from device_agent.protocol.versions import version_key
from device_agent.updater.updater import MODELS_PREFIX, decode_manifest
from edgeml.errors import ReleaseError
from edgeml.release.keystore import KeyStore
from edgeml.settings import Settings

DEFAULT_EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=365),
    "snapshot": timedelta(days=30),
    "timestamp": timedelta(days=1),
}
TARGETS_WARN_BYTES = 2_000_000
_SIGNED = {Root.type: Root, Targets.type: Targets, Snapshot.type: Snapshot, Timestamp.type: Timestamp}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float, what: str) -> timedelta:
    """``"90s"``, ``"10m"``, ``"12h"``, ``"7d"``, ``"2w"`` or seconds. Raises ReleaseError."""
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ReleaseError(f"{what} {text!r} is not a duration", hint="use e.g. 90s, 10m, 12h, 7d or 2w")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def expiry_from_settings(settings: Settings) -> dict[str, timedelta]:
    """Expiry period per role: ``[release] <role>_expiry`` in edgeml.toml, else the defaults."""
    section = settings.section("release")
    out = dict(DEFAULT_EXPIRY)
    for role in out:
        key = f"{role}_expiry"
        if key in section:
            out[role] = parse_duration(section[key], f"[release] {key}")
    return out


def _human(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs >= 86400:
        return f"{secs // 86400}d"
    if secs >= 3600:
        return f"{secs // 3600}h"
    return f"{max(secs, 0) // 60}m"


def _serialize(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=True))


class Repository(TufRepository):
    """The workstation's TUF repository (see module doc).

    ``expiry`` overrides the per-role expiry periods; ``now`` fixes the clock (tests).
    Editing methods raise ReleaseError when a needed private key is missing or locked.
    """

    def __init__(
        self,
        settings: Settings,
        passphrase: Optional[str] = None,
        expiry: Optional[dict[str, timedelta]] = None,
        now: Optional[datetime] = None,
    ) -> None:
        self.settings = settings
        self.dir = settings.repo_dir
        self.meta_dir = self.dir / "metadata"
        self.targets_dir = self.dir / "targets"
        self.keys = KeyStore(settings.keys_dir, passphrase)
        self.expiry = {**expiry_from_settings(settings), **(expiry or {})}
        self._now = now
        self._lock_depth = 0

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.fleet)

    def now(self) -> datetime:
        return self._now or datetime.now(timezone.utc)

    # storage ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository's edit lock (a publish and the controller's timestamp refresh must
        not both sign version N+1). Re-entrant within one Repository object."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def exists(self) -> bool:
        return (self.meta_dir / "root.json").is_file()

    def require(self) -> None:
        """Raise ReleaseError unless the repository has been initialised."""
        if not self.exists():
            raise ReleaseError(
                f"no update repository at {self.dir}",
                hint="create keys and the initial root with `edgeml keys init` (or pass --home)",
            )

    def path_of(self, role: str, version: Optional[int] = None) -> Path:
        if version is None:
            return self.meta_dir / f"{role}.json"
        return self.meta_dir / f"{version}.{role}.json"

    def open(self, role: str) -> Metadata[Any]:
        """Current metadata of ``role`` (a fresh copy), or a new version-0 one."""
        path = self.path_of(role)
        if not path.is_file():
            md: Metadata[Any] = Metadata(_SIGNED[role]())
            md.signed.version = 0
            return md
        return Metadata.from_bytes(path.read_bytes())

    def signers_for(self, role: str, root: Root) -> list[Signer]:
        """Signers of every key this workstation holds for ``role`` in ``root``."""
        out: list[Signer] = []
        for keyid in root.roles[role].keyids:
            signer = self.keys.signer(root.keys[keyid])
            if signer is not None:
                out.append(signer)
        return out

    def close(self, role: str, md: Metadata[Any]) -> None:
        """Bump version, set expiry, sign and store ``md``.

        Root is signed by its own keys and by the previous root's keys (a rotation needs both).
        Raises ReleaseError when the keys held cannot meet the role's threshold.
        """
        signed: Signed = md.signed
        signed.version += 1
        signed.expires = self.now() + self.expiry[role]
        md.signatures.clear()
        if role == Root.type:
            new_root: Root = md.signed
            roots = [new_root] + ([self.root()] if self.exists() else [])
            signers: dict[str, Signer] = {}
            for r in roots:
                for s in self.signers_for(Root.type, r):
                    signers[s.public_key.keyid] = s
            for r in roots:
                held = [k for k in r.roles[Root.type].keyids if k in signers]
                if len(held) < r.roles[Root.type].threshold:
                    raise ReleaseError(
                        f"root v{r.version} needs {r.roles[Root.type].threshold} root key(s); {len(held)} available",
                        hint=f"bring the offline root keys to {self.keys.dir / 'root'} (and unlock them)",
                    )
            for s in signers.values():
                md.sign(s, append=True)
        else:
            root = self.root()
            role_signers = self.signers_for(role, root)
            threshold = root.roles[role].threshold
            if len(role_signers) < threshold:
                raise ReleaseError(
                    f"{role} needs {threshold} key(s) to sign; {len(role_signers)} available in {self.keys.dir / role}",
                    hint="bring the offline keys to this workstation (and unlock them) or rotate the role's keys",
                )
            for s in role_signers:
                md.sign(s, append=True)
        data = _serialize(md)
        if role in (Timestamp.type,):
            atomic_write_bytes(self.path_of(role), data)
        else:
            atomic_write_bytes(self.path_of(role, signed.version), data)
            atomic_write_bytes(self.path_of(role), data)

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        data = self.path_of(Targets.type).read_bytes()
        version = Metadata.from_bytes(data).signed.version
        return {"targets.json": MetaFile.from_data(version, data, ["sha256"])}

    @property
    def snapshot_info(self) -> MetaFile:
        data = self.path_of(Snapshot.type).read_bytes()
        version = Metadata.from_bytes(data).signed.version
        return MetaFile.from_data(version, data, ["sha256"])

    # queries ---------------------------------------------------------------------------------
    def releases(self, name: Optional[str] = None) -> list[dict[str, Any]]:
        """Published model releases (of ``name`` or all), oldest first per name."""
        self.require()
        out = []
        for path, info in self.targets().targets.items():
            parts = path.split("/")
            if not path.startswith(MODELS_PREFIX) or len(parts) != 4:
                continue
            if name is not None and parts[1] != name:
                continue
            custom = info.custom if isinstance(info.custom, dict) else {}
            try:
                manifest: dict[str, Any] = decode_manifest(custom.get("edgeml"), path).to_dict()
            except DataError:
                manifest = {}
            out.append(
                {
                    "name": parts[1],
                    "version": parts[2],
                    "filename": parts[3],
                    "target_path": path,
                    "length": info.length,
                    "sha256": info.hashes.get("sha256"),
                    "published_at": custom.get("published_at"),
                    "manifest": manifest,
                }
            )
        try:
            out.sort(key=lambda r: (str(r["name"]), version_key(str(r["version"]))))
        except DataError:
            out.sort(key=lambda r: (r["name"], r["version"]))
        return out

    def newest_version(self, name: str) -> Optional[str]:
        """The newest version of ``name`` ever published here (removed releases count: a version
        number is never reused)."""
        versions = [r["version"] for r in self.releases(name)] + self.removed().get(name, [])
        return max(versions, key=version_key) if versions else None

    def removed(self) -> dict[str, list[str]]:
        """Versions taken out with :meth:`remove_target`, per model name."""
        path = self.dir / "removed.json"
        if not path.is_file():
            return {}
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}

    def target_file(self, target_path: str) -> Path:
        return self.targets_dir / target_path

    def status(self) -> dict[str, Any]:
        """Versions and expiry of every role."""
        self.require()
        out: dict[str, Any] = {}
        for role in (Root.type, Targets.type, Snapshot.type, Timestamp.type):
            s = self.open(role).signed
            out[role] = {"version": s.version, "expires": s.expires.isoformat().replace("+00:00", "Z")}
        root = self.root()
        out["thresholds"] = {r: root.roles[r].threshold for r in root.roles}
        out["warnings"] = self.expiry_warnings()
        return out

    def expiry_warnings(self) -> list[str]:
        """Roles that expire soon (within a tenth of their period, at most 30 days): what to run."""
        fix = {
            "root": "edgeml repo resign root (needs the offline root keys)",
            "targets": "edgeml repo resign targets (or publish)",
            "snapshot": "edgeml repo refresh",
            "timestamp": "edgeml repo refresh (the fleet controller does it while it runs)",
        }
        out = []
        size = self.path_of(Targets.type).stat().st_size
        if size > TARGETS_WARN_BYTES:
            out.append(
                f"targets metadata is {size / 1e6:.1f} MB (devices refuse more than 5 MiB by default): "
                "remove old releases with `edgeml releases rm NAME VERSION`"
            )
        for role in (Root.type, Targets.type, Snapshot.type):
            left = self.open(role).signed.expires - self.now()
            if left < min(self.expiry[role] / 10, timedelta(days=30)):
                state = "expired" if left.total_seconds() <= 0 else f"expires in {_human(left)}"
                out.append(f"{role} metadata {state}: devices refuse an expired {role}; run `{fix[role]}`")
        return out

    def resign(self, role: str) -> dict[str, Any]:
        """Sign a new version of ``role`` with a fresh expiry (no other change), then snapshot and
        timestamp as needed. Raises ReleaseError when the role's keys are not here."""
        self.require()
        if role not in _SIGNED:
            raise ReleaseError(f"unknown role {role!r}", hint=f"choose one of {', '.join(_SIGNED)}")
        with self.locked():
            with self.edit(role):
                pass
            if role == Targets.type:
                self.do_snapshot()
            self.do_timestamp(force=role == Timestamp.type)
        return self.status()

    # edits -----------------------------------------------------------------------------------
    def add_target(self, target_path: str, data: bytes, custom: dict[str, Any]) -> TargetFile:
        """Store ``data`` as a target with ``custom`` fields and sign new targets, snapshot and
        timestamp. Raises ReleaseError when keys are missing."""
        self.require()
        info = TargetFile.from_data(target_path, data, ["sha256"])
        info.unrecognized_fields["custom"] = custom
        with self.locked():
            if target_path in self.targets().targets:
                raise ReleaseError(f"{target_path} is already published", hint="publish a new version")
            atomic_write_bytes(self.target_file(target_path), data)
            with self.edit_targets() as targets:
                targets.targets[target_path] = info
            self.do_snapshot()
            self.do_timestamp()
        return info

    def remove_target(self, target_path: str) -> dict[str, Any]:
        """Take a release out of the signed targets (devices can no longer fetch it; a device that
        runs it keeps running it). Keeps targets metadata small. Raises ReleaseError."""
        self.require()
        with self.locked():
            if target_path not in self.targets().targets:
                raise ReleaseError(f"{target_path} is not published", hint="see `edgeml releases ls`")
            with self.edit_targets() as targets:
                del targets.targets[target_path]
            parts = target_path.split("/")
            if len(parts) == 4:
                removed = self.removed()
                removed.setdefault(parts[1], []).append(parts[2])
                atomic_write_bytes(self.dir / "removed.json", json.dumps(removed, indent=1, sort_keys=True).encode())
            self.do_snapshot()
            self.do_timestamp()
            self.target_file(target_path).unlink(missing_ok=True)
        return self.status()

    def refresh_timestamp(self, snapshot_margin: Optional[timedelta] = None) -> dict[str, Any]:
        """Re-sign timestamp (new version and expiry). Re-signs snapshot too when it expires
        within ``snapshot_margin`` (default: half its period). Returns the new status."""
        self.require()
        margin = snapshot_margin if snapshot_margin is not None else self.expiry["snapshot"] / 2
        with self.locked():
            if self.snapshot().expires - self.now() < margin:
                self.do_snapshot(force=True)
            self.do_timestamp(force=True)
        return self.status()

    def metadata_files(self) -> list[Path]:
        """Metadata files the broker should hold: every root version, the current snapshot and
        targets (by version) and timestamp."""
        self.require()
        roots = sorted(self.meta_dir.glob("*.root.json"), key=lambda p: int(p.name.split(".")[0]))
        files = list(roots)
        for role in (Targets.type, Snapshot.type):
            version = self.open(role).signed.version
            files.append(self.path_of(role, version))
        files.append(self.path_of(Timestamp.type))
        return files


def load_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON object. Raises ReleaseError."""
    try:
        value = json.loads(path.read_text())
    except OSError as exc:
        raise ReleaseError(f"cannot read {what} {path}: {exc.strerror}", hint="check the path") from exc
    except ValueError as exc:
        raise ReleaseError(f"{what} {path} is not valid JSON: {exc}", hint="regenerate it") from exc
    if not isinstance(value, dict):
        raise ReleaseError(f"{what} {path} is not a JSON object", hint="regenerate it")
    return value
