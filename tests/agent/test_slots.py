"""Slots on disk: atomic staging, digest checks, switch, rollback, garbage collection."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.agent.slots import SlotStore
from device_agent.errors import DataError


def model_file(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_stage_verify_switch_commit_rollback(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    a = store.stage(model_file(tmp_path, "a.tflite", b"A" * 100), {"filename": "a.tflite"}, "m", "1")
    assert store.verify(a.slot).version == "1" and a.model_path.read_bytes() == b"A" * 100
    store.switch(a.slot)
    store.commit()
    b = store.stage(model_file(tmp_path, "b.tflite", b"B" * 50), {"filename": "b.tflite"}, "m", "2")
    store.switch(b.slot)
    assert (store.active, store.previous) == (b.slot, a.slot)
    assert store.rollback() == a.slot
    assert store.active == a.slot
    store.switch(b.slot)
    store.commit()
    assert store.rollback() == a.slot  # after a commit, rollback goes to the previous slot


def test_corruption_and_truncation_are_detected(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    a = store.stage(model_file(tmp_path, "a.tflite", b"A" * 100), {}, "m", "1")
    data = bytearray(a.model_path.read_bytes())
    data[10] ^= 0xFF
    a.model_path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupted"):
        store.verify(a.slot)
    a.model_path.write_bytes(b"A" * 10)
    with pytest.raises(DataError, match="corrupted"):
        store.verify(a.slot)
    a.model_path.unlink()
    with pytest.raises(DataError, match="unreadable"):
        store.verify(a.slot)
    # staging the same content again repairs the damaged slot
    again = store.stage(model_file(tmp_path, "a.tflite", b"A" * 100), {}, "m", "1")
    assert store.verify(again.slot).slot == a.slot


def test_unreadable_pointer_reads_as_empty_and_gc_keeps_slots_in_use(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    (store.root / "pointer.json").write_text("{garbage")
    assert store.active is None
    slots = [store.stage(model_file(tmp_path, f"{i}.tflite", bytes([i]) * 10), {}, "m", str(i)) for i in range(4)]
    store.switch(slots[2].slot)
    store.commit()
    store.switch(slots[3].slot)
    store.commit()
    (store.root / ".half-written.tmp").mkdir()
    removed = store.gc(set())
    assert sorted(removed) == sorted([slots[0].slot, slots[1].slot, ".half-written.tmp"])
    assert store.slots() == sorted([slots[2].slot, slots[3].slot])
    with pytest.raises(DataError, match="in use"):
        store.remove(slots[3].slot)
