"""The shared session fixtures give a real trained and converted digits model (others reuse them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_agent.protocol import ModelManifest

pytestmark = pytest.mark.slow


def test_digits_convert_dir_has_report_and_manifests(digits_convert_dir: Path) -> None:
    report = json.loads((digits_convert_dir / "report.json").read_text())
    names = {v["name"] for v in report["variants"]}
    assert report["selected"] in names
    for row in report["variants"]:
        assert (digits_convert_dir / row["path"]).is_file()
        manifest = ModelManifest.from_json((digits_convert_dir / row["manifest"]).read_bytes())
        assert manifest.name == "digits"
        assert manifest.filename == Path(row["path"]).name
        assert len(manifest.golden) >= 3
