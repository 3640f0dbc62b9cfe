"""Writing output folders so that nothing half-written is ever left looking complete.

Everything is written into a temporary sibling folder; only when all of it is there is the
folder renamed into place (``os.replace``). A previous output of the same kind (identified by a
marker file) is replaced; any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import UsageError


@contextmanager
def atomic_dir(out_dir: Path, marker: str) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out_dir`` when the block finishes without error.

    ``marker`` is a file every complete output contains (``train.json``, ``report.json``); an
    existing ``out_dir`` is replaced only if it has that marker or is empty.
    Raises UsageError if ``out_dir`` is a file or a non-empty folder of something else.
    On error the temporary folder is removed and ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UsageError(f"{out_dir} exists and is not a folder", hint="choose another --out")
        if any(out_dir.iterdir()) and not (out_dir / marker).exists():
            raise UsageError(
                f"{out_dir} is not empty and is not an earlier output (no {marker})",
                hint="choose a new or empty folder for --out; nothing was written",
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (numpy scalars and arrays converted)."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
