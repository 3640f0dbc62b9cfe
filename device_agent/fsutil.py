"""Atomic files: a temp file in the same folder, fsync, then ``os.replace``.

Shared by the agent, the updater and the host (repository metadata, secrets)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True, mode: Optional[int] = None) -> Path:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix.
    ``mode`` sets the permissions before any byte is written (e.g. 0o600 for secrets).
    Raises OSError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def atomic_write_json(path: Path, value: Any, fsync: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), fsync=fsync)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """Parsed JSON or None when the file is missing. Raises ValueError for a corrupt file."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    return json.loads(raw)
