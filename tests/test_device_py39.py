"""The device side on the oldest Python it supports (3.9), installed as a board would: only the
``device`` extra, in a fresh venv, no TensorFlow — then a real model through LiteRT with its golden
vectors, and the ``edgeml-agent`` entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def find_python39() -> str | None:
    candidates = [shutil.which("python3.9"), "/root/.pyenv/versions/3.9.18/bin/python3.9", "/usr/bin/python3.9"]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            try:
                probe = [c, "-c", "import sys; print(sys.version_info[:2])"]
                out = subprocess.run(probe, capture_output=True, text=True)
            except OSError:
                continue
            if out.returncode == 0 and out.stdout.strip() == "(3, 9)":
                return c
    return None


CHECK = r"""
import json, sys, importlib, importlib.util, pkgutil
import numpy as np
import device_agent
for mod in pkgutil.walk_packages(device_agent.__path__, "device_agent."):
    importlib.import_module(mod.name)  # every device module imports on this Python
from pathlib import Path
from device_agent.protocol import ModelManifest
from device_agent.runtime import load_runtime
assert importlib.util.find_spec("tensorflow") is None, "tensorflow must not be installed by the device extra"
variant, manifest_path = Path(sys.argv[1]), Path(sys.argv[2])
m = ModelManifest.from_dict(json.loads(manifest_path.read_text()))
rt = load_runtime(variant, m.format, "auto", 1, m.inputs[0].sample_shape)
worst = 0.0
for g in m.golden:
    y = rt.run(np.asarray(g.input, dtype=np.float32).reshape([-1] + m.inputs[0].sample_shape))
    worst = max(worst, float(np.max(np.abs(y - np.asarray(g.output, dtype=np.float32).reshape(y.shape)))))
print(json.dumps({"python": sys.version_info[:2], "runtime": rt.name, "golden": len(m.golden), "worst": worst,
                  "atol": m.golden_atol}))
"""


@pytest.mark.slow
def test_device_extra_on_python39_runs_a_real_model(tmp_path: Path, digits_convert_dir: Path) -> None:
    py39 = find_python39()
    if py39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine (the 3.9 check needs one; 3.11 is covered elsewhere)")
    venv = tmp_path / "venv39"
    subprocess.run([py39, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{REPO}[device]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    help_out = subprocess.run([str(venv / "bin" / "edgeml-agent"), "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "run" in help_out.stdout, help_out.stderr

    report = json.loads((digits_convert_dir / "report.json").read_text())
    tflite = [v for v in report["variants"] if v["format"] == "tflite"]
    assert tflite, "the convert report has no TFLite variant"
    for v in tflite:
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", CHECK, str(digits_convert_dir / v["path"]),
             str(digits_convert_dir / v["manifest"])],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # not the checkout: import the installed package
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["python"] == [3, 9]
        assert result["golden"] >= 1
        assert result["worst"] <= result["atol"], (v["name"], result)
    assert sys.version_info >= (3, 9)
