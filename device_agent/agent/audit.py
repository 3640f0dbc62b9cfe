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

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.backups = backups
        self.dropped = 0
        self._buf: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def record(
        self,
        request_id: str,
        version: str,
        x: np.ndarray,
        classes: Optional[np.ndarray],
        confidence: Optional[np.ndarray],
        latency_ms: float,
        names: list[str],
    ) -> None:
        """Buffer one prediction (``classes`` are indices into ``names``). Never raises."""
        if len(self._buf) >= MAX_BUFFER:
            self.dropped += 1
            return
        self._buf.append((time.time(), request_id, version, x, classes, confidence, latency_ms, names))

    def flush(self) -> int:
        """Write buffered records; rotate when the file exceeds ``max_bytes``. Returns lines written."""
        with self._lock:
            buf, self._buf = self._buf, []
            if not buf:
                return 0
            lines = []
            for ts, rid, version, x, classes, conf, ms, names in buf:
                labels = (
                    [names[i] if i < len(names) else str(i) for i in classes.tolist()] if classes is not None else None
                )
                lines.append(
                    json.dumps(
                        {
                            "ts": round(ts, 6),
                            "request_id": rid,
                            "version": version,
                            "input_sha256": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:32],
                            "prediction": labels,
                            "confidence": [round(float(c), 6) for c in conf] if conf is not None else None,
                            "latency_ms": round(ms, 4),
                        },
                        separators=(",", ":"),
                    )
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
