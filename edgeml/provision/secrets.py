"""Writing files that hold secrets: created with mode 0600 from the first byte, replaced atomically.

Secrets are never printed: callers log the path and, for certificates, a fingerprint.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def _atomic_write(path: Path, data: bytes, mode: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_secret(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` with mode 0600 (never readable by others, not even briefly)."""
    return _atomic_write(path, data.encode() if isinstance(data, str) else data, SECRET_MODE)


def write_public(path: Path, data: bytes | str, mode: int = PUBLIC_MODE) -> Path:
    """Write a non-secret file atomically (certificates, configuration)."""
    return _atomic_write(path, data.encode() if isinstance(data, str) else data, mode)


def new_password(nbytes: int = 24) -> str:
    """A random URL-safe password (``nbytes`` of entropy)."""
    return secrets.token_urlsafe(nbytes)
