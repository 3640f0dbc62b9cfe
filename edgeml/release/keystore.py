"""Signing keys of the update repository (Ed25519, via securesystemslib's ``CryptoSigner``).

Layout under ``settings.keys_dir``::

    root/<keyid>.pem        offline: sign root (and root rotations); passphrase recommended
    targets/<keyid>.pem     offline: sign which models exist (every publish)
    snapshot/<keyid>.pem    online: sign the repository's consistent state
    timestamp/<keyid>.pem   online: re-signed often (``edgeml repo refresh``)
    retired/<keyid>.pem     keys taken out by a rotation (destroy them once devices moved on)

Private keys are PKCS#8 PEM, mode 0600, encrypted with the passphrase when one is given (root
and targets only: the online keys must sign unattended). Public keys live in root metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, Key

from edgeml.errors import ReleaseError

ROLES = ("root", "targets", "snapshot", "timestamp")
OFFLINE_ROLES = ("root", "targets")
PASSPHRASE_ENV = "EDGEML_KEY_PASSPHRASE"


class KeyStore:
    """Private keys on disk, found by key id. ``passphrase`` unlocks encrypted ones."""

    def __init__(self, keys_dir: Path, passphrase: Optional[str] = None) -> None:
        self.dir = Path(keys_dir)
        self.passphrase = passphrase if passphrase is not None else (os.environ.get(PASSPHRASE_ENV) or None)

    def path_of(self, keyid: str) -> Optional[Path]:
        """The file holding private key ``keyid`` (any role folder, retired included), or None."""
        if not self.dir.is_dir():
            return None
        for sub in (*ROLES, "retired"):
            p = self.dir / sub / f"{keyid}.pem"
            if p.is_file():
                return p
        return None

    def generate(self, role: str, encrypt: bool) -> CryptoSigner:
        """Create and save a new Ed25519 key for ``role`` (0600). Returns its signer."""
        signer = CryptoSigner.generate_ed25519()
        folder = self.dir / role
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        os.chmod(folder, 0o700)
        pem = signer._private_key.private_bytes(  # noqa: SLF001 - serialize with encryption
            Encoding.PEM,
            PrivateFormat.PKCS8,
            BestAvailableEncryption(self.passphrase.encode()) if (encrypt and self.passphrase) else NoEncryption(),
        )
        path = folder / f"{signer.public_key.keyid}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return signer

    def signer(self, key: Key) -> Optional[CryptoSigner]:
        """A signer for public ``key`` if its private key is here, else None.

        Raises ReleaseError when the key is encrypted and the passphrase is missing or wrong.
        """
        path = self.path_of(key.keyid)
        if path is None:
            return None
        data = path.read_bytes()
        encrypted = b"ENCRYPTED" in data.splitlines()[0]
        if encrypted and not self.passphrase:
            raise ReleaseError(
                f"signing key {path} is protected by a passphrase",
                hint=f"pass --passphrase (prompts) or set {PASSPHRASE_ENV}",
            )
        try:
            private = load_pem_private_key(data, self.passphrase.encode() if encrypted and self.passphrase else None)
        except (ValueError, TypeError) as exc:
            raise ReleaseError(
                f"cannot unlock signing key {path}: wrong passphrase or damaged file",
                hint=f"check the passphrase ({PASSPHRASE_ENV}) or restore the key from your offline backup",
            ) from exc
        return CryptoSigner(private, key)  # type: ignore[arg-type]

    def retire(self, keyid: str) -> None:
        """Move a rotated-out key to ``retired/``."""
        path = self.path_of(keyid)
        if path is None or path.parent.name == "retired":
            return
        dest = self.dir / "retired"
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o700)
        os.replace(path, dest / path.name)

    def held(self) -> dict[str, list[str]]:
        """Key ids present on disk per folder."""
        out: dict[str, list[str]] = {}
        for sub in (*ROLES, "retired"):
            folder = self.dir / sub
            out[sub] = sorted(p.stem for p in folder.glob("*.pem")) if folder.is_dir() else []
        return out
