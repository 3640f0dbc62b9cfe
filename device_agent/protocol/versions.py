"""Model version ordering, shared by the publisher, the controller and the device.

Versions are dotted (``1``, ``1.2``, ``1.2.3``, optionally ``-suffix``); numeric parts compare as
numbers, a missing part counts as 0, and a release without suffix sorts after one with it.
"""

from __future__ import annotations

import re

from device_agent.errors import DataError

_VERSION = re.compile(r"^(\d+(?:\.\d+){0,3})(?:-([0-9A-Za-z.\-]+))?$")


def version_key(version: str) -> tuple[tuple[int, ...], int, str]:
    """Sort key of a version string. Raises DataError for anything that is not a version."""
    m = _VERSION.match(version or "")
    if not m:
        raise DataError(
            f"version {version!r} is not a dotted version",
            hint="use numbers separated by dots, e.g. 1.2.0 (optionally 1.2.0-rc1)",
        )
    nums = tuple(int(p) for p in m.group(1).split("."))
    nums = nums + (0,) * (4 - len(nums))
    suffix = m.group(2) or ""
    return nums, (0 if suffix else 1), suffix


def is_newer(candidate: str, current: str | None) -> bool:
    """True when ``candidate`` sorts strictly after ``current`` (anything is newer than None)."""
    return current is None or version_key(candidate) > version_key(current)
