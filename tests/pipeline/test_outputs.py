"""Atomic output folders: complete or absent, never half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.errors import UsageError
from edgeml.pipeline.outputs import atomic_dir


def test_success_renames_into_place(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out, "done.json") as tmp:
        (tmp / "done.json").write_text("{}")
        assert not out.exists()
    assert (out / "done.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out, "done.json") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_replaces_previous_output_but_refuses_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "done.json").write_text("old")
    (out / "stale.txt").write_text("old")
    with atomic_dir(out, "done.json") as tmp:
        (tmp / "done.json").write_text("new")
    assert (out / "done.json").read_text() == "new" and not (out / "stale.txt").exists()

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"jpg")
    with pytest.raises(UsageError, match="not empty"), atomic_dir(foreign, "done.json"):
        pass
    assert (foreign / "cat.jpg").exists()
