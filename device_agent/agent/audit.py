"""Audit log of predictions: JSON lines (request id, model version, input hash, prediction,
confidence, latency), rotated and size-capped. Recording is an append to a bounded buffer; a
background flush serialises and writes."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

MAX_BUFFER = 20000


class AuditLog:
    """``record()`` on the hot path, ``flush()`` from a background thread."""

    def __init__(self, path: Path, max_bytes: int, backups: int, prefix: str = "") -> None:
        self.prefix = prefix  # request ids are "<prefix>-<n>"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.backups = backups
        self.dropped = 0
        self._buf: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def record(
        self, n: int, version: str, x: np.ndarray, outputs: Optional[np.ndarray], latency_ms: float, names: list[str]
    ) -> None:
        """Buffer one prediction (request number ``n``; a classifier's ``outputs`` or None). Never raises."""
        if len(self._buf) >= MAX_BUFFER:
            self.dropped += 1
            return
        self._buf.append((time.time(), n, version, x, outputs, latency_ms, names))

    def flush(self) -> int:
        """Write buffered records; rotate when the file exceeds ``max_bytes``. Returns lines written."""
        with self._lock:
            buf, self._buf = self._buf, []
            if not buf:
                return 0
            lines = []
            esc: dict[str, str] = {}
            for ts, n, version, x, outputs, ms, names in buf:
                v = esc.get(version)
                if v is None:
                    v = esc[version] = json.dumps(version)
                labels = conf = "null"
                if outputs is not None and outputs.ndim >= 2:
                    flat = outputs.reshape(outputs.shape[0], -1)
                    classes = flat.argmax(axis=1)
                    confs = flat[np.arange(flat.shape[0]), classes].tolist()
                    labels = json.dumps([names[i] if i < len(names) else str(i) for i in classes.tolist()])
                    conf = "[" + ",".join(f"{c:.6g}" for c in confs) + "]"
                digest = hashlib.sha256(np.ascontiguousarray(x).data).hexdigest()[:32]
                lines.append(
                    f'{{"ts":{ts:.6f},"request_id":"{self.prefix}-{n}","version":{v},"input_sha256":"{digest}",'
                    f'"prediction":{labels},"confidence":{conf},"latency_ms":{ms:.4f}}}'
                )
            data = ("\n".join(lines) + "\n").encode()
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            with open(self.path, "ab") as f:
                f.write(data)
            return len(lines)

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
