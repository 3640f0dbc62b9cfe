"""Headless Chromium (Debian's ``chromium`` package) for the dashboard test: load a page, let its
scripts run for a budget of virtual time, then dump the rendered DOM or save a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return next((p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if os.access(p, os.X_OK)), None)


def _fail(what: str, proc: subprocess.CompletedProcess[bytes]) -> RuntimeError:
    return RuntimeError(f"chromium {what} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")


def _run(binary: str, profile: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)


def dump_dom(binary: str, url: str, profile: Path, budget_ms: int = 4000, timeout: float = 60.0) -> str:
    """The page's DOM after its scripts ran for ``budget_ms`` of virtual time. Raises on failure."""
    proc = _run(binary, profile, [f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    if proc.returncode != 0 or not proc.stdout:
        raise _fail("--dump-dom", proc)
    return proc.stdout.decode("utf-8", errors="replace")


def screenshot(
    binary: str,
    url: str,
    out: Path,
    profile: Path,
    budget_ms: int = 4000,
    size: str = "1400,1300",
    timeout: float = 60.0,
) -> Path:
    """Save a PNG screenshot of the page after ``budget_ms`` of virtual time. Raises on failure."""
    args = [f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={out}", url]
    proc = _run(binary, profile, args, timeout)
    if proc.returncode != 0 or not out.is_file():
        raise _fail("--screenshot", proc)
    return out
