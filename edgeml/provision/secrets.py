"""Writing files that hold secrets: created with mode 0600 from the first byte, replaced atomically.

Secrets are never printed: callers log the path and, for certificates, a fingerprint.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from device_agent.fsutil import atomic_write_bytes

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_secret(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` with mode 0600 (never readable by others, not even briefly)."""
    return atomic_write_bytes(path, data.encode() if isinstance(data, str) else data, mode=SECRET_MODE)


def write_public(path: Path, data: bytes | str, mode: int = PUBLIC_MODE) -> Path:
    """Write a non-secret file atomically (certificates, configuration)."""
    return atomic_write_bytes(path, data.encode() if isinstance(data, str) else data, mode=mode)


def new_password(nbytes: int = 24) -> str:
    """A random URL-safe password (``nbytes`` of entropy)."""
    return secrets.token_urlsafe(nbytes)
