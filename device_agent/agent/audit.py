"""Audit log of predictions: JSON lines (request id, model version, input hash, prediction,
confidence, latency), rotated and size-capped. Recording is an append to a bounded buffer; a
background flush serialises and writes."""

from __future__ import annotations

import json
import os
import threading
import time
from hashlib import sha256
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
            named: dict[int, list[str]] = {}
            classes_all, conf_all, offsets = _classify(buf)
            for j, (ts, n, version, x, _outputs, ms, names) in enumerate(buf):
                v = esc.get(version)
                if v is None:
                    v = esc[version] = json.dumps(version)
                labels = conf = "null"
                start, stop = offsets[j]
                if stop > start:
                    enc = named.get(id(names))
                    if enc is None:
                        enc = named[id(names)] = [json.dumps(str(nm)) for nm in names]
                    if stop == start + 1:  # one sample: no joins
                        c = classes_all[start]
                        labels = "[" + (enc[c] if c < len(enc) else json.dumps(str(c))) + "]"
                        conf = f"[{conf_all[start]:.6g}]"
                    else:
                        cls = classes_all[start:stop]
                        labels = "[" + ",".join(enc[c] if c < len(enc) else f'"{c}"' for c in cls) + "]"
                        conf = "[" + ",".join(f"{c:.6g}" for c in conf_all[start:stop]) + "]"
                digest = sha256(x.data if x.flags.c_contiguous else np.ascontiguousarray(x).data).hexdigest()[:32]
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


def _classify(buf: list[tuple[Any, ...]]) -> tuple[list[int], list[float], list[tuple[int, int]]]:
    """Argmax classes and confidences of every buffered classifier output, vectorised per output
    width. Returns flat lists and each entry's (start, stop) into them."""
    groups: dict[int, list[int]] = {}
    for j, entry in enumerate(buf):
        outputs = entry[4]
        if outputs is not None and outputs.ndim >= 2 and outputs.shape[0] > 0:
            groups.setdefault(outputs.size // outputs.shape[0], []).append(j)
    offsets = [(0, 0)] * len(buf)
    classes: list[int] = []
    conf: list[float] = []
    for width, idx in groups.items():
        flat = np.concatenate([buf[j][4].reshape(-1, width) for j in idx])
        c = flat.argmax(axis=1)
        p = flat[np.arange(flat.shape[0]), c]
        base = len(classes)
        classes.extend(c.tolist())
        conf.extend(p.tolist())
        pos = base
        for j in idx:
            k = buf[j][4].shape[0]
            offsets[j] = (pos, pos + k)
            pos += k
    return classes, conf, offsets
