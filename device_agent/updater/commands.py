"""`edgeml-agent` subcommands owned by device_agent.updater."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``edgeml-agent`` subparsers."""
    _ = argparse
