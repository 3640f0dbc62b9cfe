"""Facts about the machine that measured the numbers: CPU model, core count, package versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "numpy",
    "tensorflow-cpu",
    "keras",
    "scikit-learn",
    "ai-edge-litert",
    "onnxruntime",
    "onnx",
    "tf2onnx",
    "skl2onnx",
)


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (``model name``), falling back to ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """SIMD flags relevant to int8 speed (avx2, avx512_vnni, avx_vnni, neon/asimd, asimddp)."""
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp", "neon"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")) and ":" in line:
                return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def cpu_info() -> dict[str, object]:
    return {"model": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(), "flags": cpu_flags()}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
