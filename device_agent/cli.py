"""``edgeml-agent``: the device's command line (argparse: no dependencies beyond the agent's).

Subcommands are registered by the modules that own them, each with
``register(subparsers)`` adding a parser whose ``func(args) -> int`` runs it. Errors raised on
purpose (:class:`~device_agent.errors.AgentError`) print their message and hint and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from device_agent import __version__
from device_agent.errors import AgentError

COMMAND_MODULES = (
    "device_agent.agent.commands",  # run, status
    "device_agent.updater.commands",  # fetch
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeml-agent",
        description="edgeml device agent: verified model updates over MQTT, local inference, telemetry.",
    )
    parser.add_argument("--version", action="version", version=f"edgeml-agent {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
        return int(rc or 0)
    except AgentError as exc:
        if args.debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("edgeml.agent").info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
