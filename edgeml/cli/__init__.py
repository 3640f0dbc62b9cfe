"""The ``edgeml`` command line: thin — parse, call the library, render.

Every command module registers its commands on :data:`main`. Errors are rendered in one place
(:func:`run_cli`): an :class:`~device_agent.errors.AgentError` (which every edgeml error is)
prints its message and hint and exits 2; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from device_agent.errors import AgentError
from edgeml.cli.options import Context, pass_ctx

# Command modules, each with a ``register(main)`` function. Imported lazily at start so that a
# command's heavy dependencies (TensorFlow) load only when that command runs.
COMMAND_MODULES = (
    "edgeml.cli.pipeline",
    "edgeml.cli.release",
    "edgeml.cli.fleet",
    "edgeml.cli.device",
    "edgeml.cli.demo",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="Project home: keys, repository, store, runs. [env EDGEML_HOME; default ./.edgeml]",
)
@click.option("--broker", default=None, help="MQTT broker URL. [env EDGEML_BROKER; default mqtt://127.0.0.1:1883]")
@click.option(
    "--fleet", default=None, help="Fleet name (topic root edgeml/<fleet>). [env EDGEML_FLEET; default 'default']"
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="edgeml")
@click.pass_context
def main(ctx: click.Context, home: str | None, broker: str | None, fleet: str | None, debug: bool) -> None:
    """edgeml: put machine-learning models on fleets of edge devices.

    \b
    Typical flow:
      edgeml train --dataset digits --out runs/digits
      edgeml convert runs/digits --out runs/digits-c
      edgeml keys init
      edgeml publish runs/digits-c --name digits --version 1.0.0
      edgeml fleet serve                 # collector, rollouts, dashboard
      edgeml rollout start digits 1.0.0 --stages 1,10,50,100
    """
    ctx.obj = Context(home=home, broker=broker, fleet=fleet, debug=debug)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(main)


def run_cli(args: list[str] | None = None, **kwargs: Any) -> Any:
    """Run the CLI, rendering known errors in one place: message, hint, exit code 2."""
    debug = "--debug" in (args if args is not None else sys.argv[1:])
    try:
        return main.main(args=args, standalone_mode=False, **kwargs)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except AgentError as exc:  # every edgeml and device error raised on purpose
        if debug:
            raise
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def _entry() -> None:
    rv = run_cli()
    sys.exit(rv if isinstance(rv, int) else 0)


__all__ = ["main", "pass_ctx", "run_cli"]
