"""Creating and rotating the repository's keys (``edgeml keys init|rotate``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional

from tuf.api.metadata import Root

from edgeml.errors import ReleaseError
from edgeml.release.keystore import OFFLINE_ROLES, ROLES
from edgeml.release.repo import Repository
from edgeml.settings import Settings


def init_keys(
    settings: Settings,
    root_threshold: int = 1,
    targets_threshold: int = 1,
    passphrase: Optional[str] = None,
    force: bool = False,
    expiry: Optional[dict[str, timedelta]] = None,
) -> dict[str, Any]:
    """Create Ed25519 keys for every role (``threshold`` keys each for root and targets, one for
    snapshot and timestamp), the initial root (v1) and empty targets, snapshot and timestamp.

    Root and targets keys are encrypted with ``passphrase`` when given. Raises ReleaseError if
    a repository exists already (unless ``force``: a new trust root that devices will refuse).
    """
    for what, t in (("root", root_threshold), ("targets", targets_threshold)):
        if not isinstance(t, int) or t < 1 or t > 16:
            raise ReleaseError(f"{what} threshold {t!r} must be between 1 and 16", hint="e.g. --threshold 2")
    repo = Repository(settings, passphrase=passphrase, expiry=expiry)
    with repo.locked():
        return _init(repo, settings, root_threshold, targets_threshold, passphrase, force)


def _init(
    repo: Repository,
    settings: Settings,
    root_threshold: int,
    targets_threshold: int,
    passphrase: Optional[str],
    force: bool,
) -> dict[str, Any]:
    if repo.exists() or any(repo.keys.held().get(r) for r in ROLES):
        if not force:
            raise ReleaseError(
                f"keys or a repository already exist in {settings.home}",
                hint="rotate keys with `edgeml keys rotate ROLE`; --force starts a new trust root "
                "(every device must then be provisioned again)",
            )
        _wipe(repo)
    counts = {"root": root_threshold, "targets": targets_threshold, "snapshot": 1, "timestamp": 1}
    root = Root(consistent_snapshot=True)
    for role in ROLES:
        for _ in range(counts[role]):
            signer = repo.keys.generate(role, encrypt=role in OFFLINE_ROLES)
            root.add_key(signer.public_key, role)
        root.roles[role].threshold = counts[role]
    md = repo.open(Root.type)
    md.signed = root
    root.version = 0
    repo.close(Root.type, md)
    with repo.edit_targets():
        pass
    repo.do_snapshot(force=True)
    repo.do_timestamp(force=True)
    return {
        "home": str(settings.home),
        "keys_dir": str(settings.keys_dir),
        "repo_dir": str(settings.repo_dir),
        "root": str(repo.path_of("root")),
        "keys": {r: list(root.roles[r].keyids) for r in ROLES},
        "thresholds": {r: root.roles[r].threshold for r in ROLES},
        "encrypted": sorted(OFFLINE_ROLES) if passphrase else [],
    }


def rotate_key(settings: Settings, role: str, passphrase: Optional[str] = None) -> dict[str, Any]:
    """Replace every key of ``role`` by as many new keys (threshold kept) in a new root version.

    The new root is signed by the old and the new root keys, so devices that trust the old root
    accept it; the role's metadata is re-signed with the new key(s). Old private keys move to
    ``keys/retired``. Raises ReleaseError for an unknown role or missing keys.
    """
    if role not in ROLES:
        raise ReleaseError(f"unknown role {role!r}", hint=f"choose one of {', '.join(ROLES)}")
    repo = Repository(settings, passphrase=passphrase)
    repo.require()
    with repo.locked():
        return _rotate(repo, role)


def _rotate(repo: Repository, role: str) -> dict[str, Any]:
    old_root = repo.root()
    old_ids = list(old_root.roles[role].keyids)
    new_keys = [
        repo.keys.generate(role, encrypt=role in OFFLINE_ROLES and bool(repo.keys.passphrase)).public_key
        for _ in range(max(len(old_ids), old_root.roles[role].threshold))
    ]
    new_ids = [k.keyid for k in new_keys]
    try:
        with repo.edit_root() as root:
            for keyid in old_ids:
                root.revoke_key(keyid, role)
            for key in new_keys:
                root.add_key(key, role)
    except ReleaseError:
        for keyid in new_ids:  # the rotation did not happen: drop the unused new keys
            path = repo.keys.path_of(keyid)
            if path is not None:
                path.unlink()
        raise
    for keyid in old_ids:
        if keyid not in repo.root().keys:
            repo.keys.retire(keyid)
    if role == "targets":
        with repo.edit_targets():
            pass
        repo.do_snapshot()
        repo.do_timestamp()
    elif role == "snapshot":
        repo.do_snapshot(force=True)
        repo.do_timestamp()
    elif role == "timestamp":
        repo.do_timestamp(force=True)
    return {
        "role": role,
        "root_version": repo.root().version,
        "retired": old_ids,
        "new": new_ids,
        "status": repo.status(),
    }


def _wipe(repo: Repository) -> None:
    for folder in (repo.meta_dir, *(repo.keys.dir / r for r in (*ROLES, "retired"))):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_file():
                    p.unlink()
