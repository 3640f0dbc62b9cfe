"""Model slots on disk, switched atomically.

Layout under ``slots_dir``::

    pointer.json            {"active": SLOT, "previous": SLOT, "before": {...} | null}
    <SLOT>/model.<ext>      the verified model bytes
    <SLOT>/slot.json        name, version, filename, sha256, length, manifest

A slot is written into a temp folder and renamed into place (atomic), so a slot either exists
complete or not at all. The pointer file is replaced atomically; switching the active model is
one ``os.replace``. ``before`` remembers the pointer before the last switch so a rollback returns
to exactly that. Every load re-hashes the model file (:meth:`SlotStore.verify`) so a corrupted
slot is detected and the previous one used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from device_agent.errors import DataError
from device_agent.fsutil import atomic_write_json, fsync_dir, read_json

POINTER = "pointer.json"
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass
class SlotInfo:
    """What one slot holds."""

    slot: str
    name: str
    version: str
    filename: str
    sha256: str
    length: int
    manifest: dict[str, Any]
    path: Path

    @property
    def model_path(self) -> Path:
        return self.path / self.filename


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, length) of a file. Raises OSError."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


class SlotStore:
    """Slots and the pointer. Not thread-safe: one agent thread owns writes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- pointer
    def pointer(self) -> dict[str, Any]:
        """The pointer; a missing or unreadable one reads as empty (nothing active)."""
        try:
            data = read_json(self.root / POINTER)
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            return {"active": None, "previous": None, "before": None}
        return {"active": data.get("active"), "previous": data.get("previous"), "before": data.get("before")}

    def _write_pointer(self, active: Optional[str], previous: Optional[str], before: Any) -> None:
        atomic_write_json(self.root / POINTER, {"active": active, "previous": previous, "before": before})

    @property
    def active(self) -> Optional[str]:
        return self.pointer()["active"]  # type: ignore[no-any-return,unused-ignore]

    @property
    def previous(self) -> Optional[str]:
        return self.pointer()["previous"]  # type: ignore[no-any-return,unused-ignore]

    def switch(self, slot: str) -> None:
        """Make ``slot`` active; the old active becomes previous. Remembers the old pointer."""
        p = self.pointer()
        if p["active"] == slot:
            return
        self._write_pointer(slot, p["active"], {"active": p["active"], "previous": p["previous"]})

    def rollback(self) -> Optional[str]:
        """Return to the pointer before the last switch (or to the previous slot). Returns the
        now-active slot."""
        p = self.pointer()
        before = p.get("before")
        if isinstance(before, dict) and before.get("active"):
            self._write_pointer(before.get("active"), before.get("previous"), None)
            return before.get("active")  # type: ignore[no-any-return,unused-ignore]
        if p["previous"]:
            self._write_pointer(p["previous"], None, None)
            return p["previous"]  # type: ignore[no-any-return,unused-ignore]
        return p["active"]  # type: ignore[no-any-return,unused-ignore]

    def commit(self) -> None:
        """Forget how to undo the last switch (the previous slot stays as the fallback)."""
        p = self.pointer()
        if p["before"] is not None:
            self._write_pointer(p["active"], p["previous"], None)

    def drop_active(self, fallback: Optional[str]) -> None:
        """The active slot is unusable: make ``fallback`` active (or nothing)."""
        p = self.pointer()
        previous = p["previous"] if p["previous"] != fallback else None
        self._write_pointer(fallback, previous, None)

    # ------------------------------------------------------------------- slots
    def slot_name(self, name: str, version: str, sha256: str) -> str:
        return _SAFE.sub("_", f"{name}-{version}-{sha256[:12]}")

    def stage(
        self, source: Path, manifest: dict[str, Any], name: str, version: str,
        measured: Optional[tuple[str, int]] = None,
    ) -> SlotInfo:
        """Copy ``source`` into a new slot (temp folder, then rename). ``measured`` is the file's
        (sha256, length) when the caller has just computed it. Returns the slot. Raises OSError."""
        digest, length = measured or sha256_file(source)
        slot = self.slot_name(name, version, digest)
        final = self.root / slot
        filename = "model" + (Path(str(manifest.get("filename") or source.name)).suffix or ".tflite")
        if final.exists():
            try:
                return self.verify(slot)
            except DataError:
                shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{slot}.", dir=self.root))
        try:
            shutil.copyfile(source, tmp / filename)
            with open(tmp / filename, "rb") as f:
                os.fsync(f.fileno())
            meta = {
                "name": name,
                "version": version,
                "filename": filename,
                "sha256": digest,
                "length": length,
                "manifest": manifest,
            }
            (tmp / "slot.json").write_text(json.dumps(meta, sort_keys=True))
            fsync_dir(tmp)
            os.replace(tmp, final)
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.verify(slot)

    def info(self, slot: str) -> SlotInfo:
        """Read a slot's metadata without hashing. Raises DataError when it is missing or unreadable."""
        path = self.root / slot
        try:
            meta = json.loads((path / "slot.json").read_text())
            return SlotInfo(
                slot,
                str(meta["name"]),
                str(meta["version"]),
                str(meta["filename"]),
                str(meta["sha256"]),
                int(meta["length"]),
                dict(meta["manifest"]),
                path,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"slot {slot}: metadata missing or unreadable ({exc})") from exc

    def verify(self, slot: str) -> SlotInfo:
        """Re-hash the slot's model file against its recorded digest and length.
        Raises DataError when the slot is missing, truncated or corrupted."""
        info = self.info(slot)
        try:
            digest, length = sha256_file(info.model_path)
        except OSError as exc:
            raise DataError(f"slot {slot}: model file unreadable ({exc})") from exc
        if length != info.length or digest != info.sha256:
            raise DataError(
                f"slot {slot}: model file is corrupted (sha256 {digest[:12]}..., {length} bytes; "
                f"expected {info.sha256[:12]}..., {info.length} bytes)",
                hint="the agent falls back to the previous slot and downloads the model again",
            )
        return info

    def slots(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def remove(self, slot: str) -> None:
        p = self.pointer()
        if slot in (p["active"], p["previous"]):
            raise DataError(f"slot {slot} is in use and cannot be removed")
        shutil.rmtree(self.root / slot, ignore_errors=True)

    def gc(self, keep: set[str]) -> list[str]:
        """Remove slots and temp folders not in ``keep`` nor named by the pointer. Returns removed names."""
        p = self.pointer()
        before = p["before"] if isinstance(p["before"], dict) else {}
        keep = set(keep) | {s for s in (p["active"], p["previous"], before.get("active"), before.get("previous")) if s}
        removed = []
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed
