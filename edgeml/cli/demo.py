"""`edgeml demo`: the main job end to end on embedded defaults, rendered with rich."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import click

from edgeml.cli.options import Context, echo_json, json_option, pass_ctx


def _rich_reporter(console: Any) -> Any:
    """A :class:`edgeml.demo.Reporter` drawing phases, progress bars and live rollout lines."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edgeml.demo import Reporter

    class RichReporter(Reporter):
        def __init__(self) -> None:
            self._last: dict[str, str] = {}

        def phase(self, title: str) -> None:
            console.rule(f"[bold]{title}")

        def info(self, text: str) -> None:
            console.print(f"  {text}", highlight=False)

        def block(self, text: str) -> None:
            console.print(text, highlight=False, markup=False, soft_wrap=True)

        @contextlib.contextmanager
        def task(self, description: str, total: Optional[float] = None) -> Iterator[Callable[..., None]]:
            columns = [SpinnerColumn(), TextColumn("{task.description}")]
            if total is not None:
                columns += [BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}")]
            columns.append(TimeElapsedColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                task_id = progress.add_task(description, total=total)

                def update(completed: Optional[float] = None, description: Optional[str] = None) -> None:
                    kwargs: dict[str, Any] = {}
                    if completed is not None:
                        kwargs["completed"] = completed
                    if description is not None:
                        kwargs["description"] = description
                    progress.update(task_id, **kwargs)

                yield update

        def summary(self, result: Any) -> None:
            _render_summary(console, result)

    return RichReporter()


SHORT = {"update_failures": "failures", "error_rate": "errors", "p95_latency_ratio": "p95 ratio",
         "prediction_shift": "pred. shift", "shadow_agreement": "shadow agr."}


def _gate_cell(g: dict[str, Any]) -> str:
    value = g.get("value")
    if value is None:
        return "…" if g.get("ok") is None else "[dim]n/a[/]"
    mark = "[green]✓[/]" if g.get("ok") is True else "[red]✗[/]" if g.get("ok") is False else "…"
    return f"{value:.3g} {mark}"


def _render_summary(console: Any, result: Any) -> None:
    from rich.table import Table

    names: dict[str, str] = {}
    for r in result.rollouts:
        for st in r.stage_log:
            for g in st.gates:
                op = {"<=": "≤", ">=": "≥"}.get(str(g.get("op")), str(g.get("op")))
                name = str(g.get("name"))
                names.setdefault(name, f"{SHORT.get(name, name)}\n{op} {g.get('threshold'):g}")
    table = Table(title="rollouts: every stage and the gate values that decided it (n/a: no control group or no data)")
    for col in ("version", "stage", "outcome", *names.values()):
        table.add_column(col)
    colors = {"passed": "green", "completed": "green", "halted": "red", "aborted": "red"}
    for r in result.rollouts:
        head = f"[bold]{r.version}[/] [{colors.get(r.state, 'yellow')}]{r.state}[/]"
        if not r.stage_log:
            table.add_row(head, "–", r.state, *["" for _ in names])
        for k, st in enumerate(r.stage_log):
            by_name = {str(g.get("name")): g for g in st.gates}
            took = f" {st.seconds:.0f}s" if st.seconds is not None else ""
            table.add_row(
                head if k == 0 else ("" if k > 1 else f"from {r.previous_version or '–'}"),
                f"{st.pct:g}%",
                f"[{colors.get(st.outcome, 'yellow')}]{st.outcome}[/]{took}",
                *[_gate_cell(by_name[n]) if n in by_name else "" for n in names],
                end_section=k == len(r.stage_log) - 1,
            )
    console.print(table)
    for r in result.rollouts:
        if r.state in ("halted", "aborted") and r.reason:
            console.print(f"[red]{r.version} {r.state}[/]: {r.reason}; its cohort went back to {r.previous_version}")
    devices = Table(title="devices per version (online)")
    devices.add_column("version")
    devices.add_column("devices", justify="right")
    for version, n in result.versions.items():
        devices.add_row(version, str(n))
    console.print(devices)
    console.print(f"dashboard: [bold]{result.dashboard}[/]   home: {result.home}   broker: {result.broker}")
    timings = ", ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in result.timings.items())
    console.print(f"time: {timings}")
    color = "green" if result.ok else "red"
    console.print(f"[bold {color}]{'OK' if result.ok else 'FAILED'}: {result.verdict}[/]")


def register(main: click.Group) -> None:
    """Add ``edgeml demo`` to ``main``."""

    @main.command("demo")
    @click.option("--devices", type=click.IntRange(2, 500), default=20, show_default=True,
                  help="Simulated devices (real agent code, one process).")
    @click.option("--epochs", type=click.IntRange(1, 200), default=12, show_default=True,
                  help="Training epochs of v1 (v2 retrains with another seed).")
    @click.option("--soak", default="10s", show_default=True, help="How long every rollout stage must hold its gates.")
    @click.option("--stages", default="10,50,100", show_default=True, help="Rollout stages of v2 and v3, in percent.")
    @click.option("--rate", type=click.FloatRange(1, 500), default=40.0, show_default=True,
                  help="Requests per second each simulated device serves (held-out digits).")
    @click.option("--telemetry-interval", type=click.FloatRange(0.5, 60), default=5.0, show_default=True,
                  help="Seconds per telemetry window on every device (longer windows: steadier PSI per device).")
    @click.option("--slow-factor", type=float, default=6.0, show_default=True,
                  help="How much slower v3 runs on the devices (the simulator's slow-model fault).")
    @click.option("--port", type=click.IntRange(0, 65535), default=0,
                  help="Dashboard port on 127.0.0.1 [default: a free one].")
    @click.option("--broker-kind", type=click.Choice(["auto", "mosquitto", "embedded"]), default="auto",
                  show_default=True, help="Which private broker to start (ignored when --broker is given).")
    @click.option("--home", "demo_home", type=click.Path(file_okay=False), default=None,
                  help="Project home for this run [default: a fresh folder under .edgeml/demo].")
    @click.option("--models-from", type=click.Path(exists=True, file_okay=False), default=None,
                  help="Reuse the trained models of an earlier demo (its home) instead of training again.")
    @click.option("--keep-running", is_flag=True, help="After the story, keep the fleet and dashboard up until Ctrl-C.")
    @json_option
    @pass_ctx
    def demo_cmd(
        ctx: Context, devices: int, epochs: int, soak: str, stages: str, rate: float, telemetry_interval: float,
        slow_factor: float, port: int, broker_kind: str, demo_home: Optional[str], models_from: Optional[str],
        keep_running: bool, as_json: bool,
    ) -> None:
        """Run the whole story end to end, with nothing to set up by hand.

        \b
        Starts a private broker (Mosquitto on a free port, else the embedded one), trains and
        converts the digits CNN (v1, and v2 retrained), creates keys, publishes v1, starts a
        fleet controller with its dashboard and a simulated fleet of real agents fed with
        held-out digits, and rolls v1 out. Then v2 goes out in gated stages to 100%, and a broken
        v3 (much slower on the devices) halts at its first stage and rolls back on its own.
        Ends with a summary; exits 1 unless v2 runs on every device and v3 on none.
        Everything it starts is stopped on exit or Ctrl-C.
        """
        import logging

        from rich.console import Console

        from edgeml.demo import DemoConfig, default_home, run_demo
        from edgeml.fleet.rollout import parse_duration, parse_stages

        home = Path(demo_home or ctx.home or default_home())
        config = DemoConfig(
            home=home, devices=devices, epochs=epochs, soak_s=parse_duration(soak),
            stages=tuple(parse_stages(stages)), request_rate=rate, telemetry_interval=telemetry_interval,
            slow_factor=slow_factor, http_port=port, broker=ctx.broker, broker_kind=broker_kind,
            fleet=ctx.fleet or "demo", keep_running=keep_running,
            models_from=Path(models_from) if models_from else None,
        )
        config.validate()
        console = Console(stderr=as_json, highlight=False)
        if not ctx.debug:  # the demo reports what the controller logs (halts, rollbacks) in its own lines
            for name in ("", "edgeml", "amqtt", "transitions"):
                logging.getLogger(name).setLevel(logging.ERROR)
        reporter = _rich_reporter(console)
        result = run_demo(config, reporter)
        if as_json:
            echo_json(result.to_dict())
        if not result.ok:
            sys.exit(1)
