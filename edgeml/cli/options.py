"""Options defined once and reused by every command, and the shared CLI context."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import click

from edgeml.settings import Settings, load_settings


@dataclass
class Context:
    """What the top-level group parsed; ``settings`` resolves flags > env > edgeml.toml > defaults."""

    home: str | None = None
    broker: str | None = None
    fleet: str | None = None
    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.home, broker=self.broker, fleet=self.fleet, **self.overrides)


pass_ctx = click.make_pass_decorator(Context, ensure=True)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON to stdout.")


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (the contract for ``--json``)."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
