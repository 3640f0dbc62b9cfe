"""The prediction audit log: JSON lines, rotated and size-capped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from device_agent.agent.audit import AuditLog


def test_lines_carry_id_version_hash_prediction_confidence_latency(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "p.jsonl", 1 << 20, 2, "boot")
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    log.record(7, '2.0.0"rc', x, np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32), 1.25, ["no", "yes"])
    log.record(8, "2.0.0", x[:1], None, 0.5, [])
    assert log.flush() == 2
    first, second = (json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines())
    assert first["request_id"] == "boot-7" and first["version"] == '2.0.0"rc'
    assert first["prediction"] == ["yes", "no"] and first["confidence"] == [0.8, 0.6]
    assert first["input_sha256"] == hashlib.sha256(x.tobytes()).hexdigest()[:32]
    assert first["latency_ms"] == 1.25 and second["prediction"] is None


def test_rotation_keeps_the_size_capped(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "p.jsonl", 2000, 2, "b")
    x = np.zeros((1, 4), dtype=np.float32)
    for i in range(200):
        log.record(i, "1", x, np.array([[0.5, 0.5]], dtype=np.float32), 0.1, ["a", "b"])
        if i % 10 == 9:
            log.flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["p.jsonl", "p.jsonl.1", "p.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    last = (tmp_path / "p.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["request_id"] == "b-199"
