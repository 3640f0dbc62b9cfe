"""An in-memory updater with the real Updater's interface (docs/INTERFACES.md §2), for unit tests of
the update state machine only. Integration tests use the real Updater and a real publish."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from device_agent.errors import DataError, TransportError


@dataclass
class FakeRelease:
    name: str
    version: str
    target_path: str
    length: int
    manifest: dict[str, Any] = field(default_factory=dict)


class FakeUpdater:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.rels: dict[str, list[FakeRelease]] = {}
        self.transport_failures = 0  # next N downloads raise TransportError
        self.tamper: set[str] = set()
        self.downloads = 0
        self.cache_clears = 0
        self.closed = False

    def add(self, model: Path, manifest: dict[str, Any]) -> FakeRelease:
        data = Path(model).read_bytes()
        tp = f"models/{manifest['name']}/{manifest['version']}/{Path(model).name}"
        rel = FakeRelease(manifest["name"], manifest["version"], tp, len(data), dict(manifest))
        self.files[tp] = data
        self.rels.setdefault(rel.name, []).append(rel)
        return rel

    def refresh(self) -> None:
        pass

    def releases(self, name: str) -> list[FakeRelease]:
        return list(self.rels.get(name, []))

    def newest(self, name: str) -> Optional[FakeRelease]:
        from device_agent.protocol.versions import version_key

        rels = self.releases(name)
        return max(rels, key=lambda r: version_key(r.version)) if rels else None

    def download(self, release: FakeRelease, dest: Path, progress: Any = None) -> Path:
        self.downloads += 1
        if self.transport_failures > 0:
            self.transport_failures -= 1
            raise TransportError("broker went away (fake)")
        if release.target_path in self.tamper:
            raise DataError(f"{release.target_path}: hash mismatch (fake)")
        tmp = Path(str(dest) + ".tmp")
        tmp.write_bytes(self.files[release.target_path])
        os.replace(tmp, dest)
        return Path(dest)

    def clear_cache(self) -> None:
        self.cache_clears += 1

    def close(self) -> None:
        self.closed = True
