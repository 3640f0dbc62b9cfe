"""`edgeml fleet|rollout|telemetry` commands: thin wrappers over :mod:`edgeml.fleet`.

The controller (``edgeml fleet serve``) owns the broker side; the other commands read and write
the store directly (rollouts and operator commands live there), so they work from any shell that
can reach the store, and the running controller picks the changes up on its next tick.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import click

from edgeml.cli.options import Context, echo_json, json_option, pass_ctx

store_option = click.option(
    "--store", "store_url", default=None, metavar="URL",
    help="Fleet store: sqlite:///path.db or postgresql+psycopg://user:pass@host/db. "
         "[env EDGEML_STORE; default sqlite in the project home]",
)


def _store(ctx: Context, store_url: Optional[str]) -> Any:
    from edgeml.fleet.store import Store

    if store_url:
        ctx.overrides["store"] = store_url
        ctx.__dict__.pop("settings", None)
    return Store(ctx.settings.store_url)


def _ago(ts: Optional[float]) -> str:
    if not ts:
        return "-"
    d = max(0.0, time.time() - ts)
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.0f}h ago"


def _num(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def _status_lines(st: dict[str, Any]) -> None:
    stages = " -> ".join(
        (f"[{p:g}%{'*' if m == 'shadow' else ''}]" if i == st["stage_index"] and st["state"] in ("running", "paused")
         else f"{p:g}%{'*' if m == 'shadow' else ''}")
        for i, (p, m) in enumerate(zip(st["stages"], st.get("modes", ["serve"] * len(st["stages"]))))
    )
    click.echo(f"{st['id']}: {st['model']} {st['previous_version'] or '-'} -> {st['version']}  [{st['state']}]")
    click.echo(f"  target {st['target']}  stages {stages}  soak {st['soak_s']:g}s")
    click.echo(f"  devices at {st['version']}: {st['devices_at_version']}/{st['devices_total']}  "
               f"cohort {st['cohort_at_version']}/{st['cohort_size']}")
    for g in st["gates"]:
        mark = {True: "ok", False: "FAIL", None: ".."}[g["ok"]]
        value = "-" if g["value"] is None else f"{g['value']:.4g}"
        click.echo(f"  {mark:4} {g['name']}{g['op']}{g['threshold']:g}  value {value}  {g.get('note') or ''}")
    if st["reason"]:
        click.echo(f"  reason: {st['reason']}")


def register(main: click.Group) -> None:
    """Add this module's commands to ``main``."""

    @main.group()
    def fleet() -> None:
        """The fleet controller, fleet views and the simulator."""

    @fleet.command("serve")
    @store_option
    @click.option("--port", default=8765, show_default=True, help="HTTP port of the dashboard and API (0 = any).")
    @click.option("--host", default="127.0.0.1", show_default=True, help="HTTP address to bind.")
    @click.option("--share-group", default=None, metavar="NAME",
                  help="Share telemetry with other collectors through an MQTT shared subscription.")
    @click.option("--tick", default=1.0, show_default=True, help="Seconds between rollout decisions.")
    @click.option("--collect-only", is_flag=True,
                  help="Only collect into the store (an extra collector beside one full controller).")
    @pass_ctx
    def serve(ctx: Context, store_url: Optional[str], port: int, host: str, share_group: Optional[str],
              tick: float, collect_only: bool) -> None:
        """Run the controller: collector, rollouts, alerts, dashboard, /metrics.

        \b
        Collects device state, events and telemetry from the broker into the store, drives
        rollouts stage by stage on their gates, rolls back by itself, evaluates alert rules,
        keeps the repository timestamp fresh when it holds the online key, and serves
        http://HOST:PORT/ (dashboard), /api/* (JSON) and /metrics (Prometheus). Stop with Ctrl-C;
        everything it needs to continue is in the store.
        """
        from edgeml.fleet.controller import Controller

        logging.basicConfig(level=logging.DEBUG if ctx.debug else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if store_url:
            ctx.overrides["store"] = store_url
        s = ctx.settings
        c = Controller(s, s.broker, s.store_url, http_port=port, http_host=host, share_group=share_group,
                       tick_interval=tick, collect_only=collect_only)
        c.start()
        if collect_only:
            click.echo(f"fleet {s.fleet}: collecting from {s.broker_url} into {c.store.dialect}")
        else:
            click.echo(f"fleet {s.fleet}: broker {s.broker_url}, store {c.store.dialect}; dashboard {c.url}/")
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            while not done.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            click.echo("stopping the controller")
            c.stop()

    @fleet.command("ls")
    @store_option
    @json_option
    @pass_ctx
    def ls(ctx: Context, store_url: Optional[str], as_json: bool) -> None:
        """List devices: online, model@version, last seen, p95 latency, drift."""
        from edgeml.fleet import views
        from edgeml.fleet.controller import release_manifest_lookup

        store = _store(ctx, store_url)
        devices = views.fleet_devices(store, drift=views.DriftCache(store, release_manifest_lookup(ctx.settings)))
        if as_json:
            echo_json({"devices": devices})
            return
        rows = [
            [d["device_id"], "yes" if d["online"] else "no", f"{d['model'] or '-'}@{d['version'] or '-'}",
             d["update_state"] or "-", _ago(d["last_seen"]), _num(d["p95_ms"]), _num(d["psi_max"], 3),
             "DRIFT" if d["drift"] else ""]
            for d in devices
        ]
        _table(rows, ["DEVICE", "ONLINE", "MODEL@VERSION", "UPDATE", "LAST SEEN", "P95 MS", "PSI", ""])
        click.echo(f"{len(devices)} devices, {sum(1 for d in devices if d['online'])} online")

    @fleet.command("show")
    @click.argument("device_id")
    @store_option
    @json_option
    @pass_ctx
    def show(ctx: Context, device_id: str, store_url: Optional[str], as_json: bool) -> None:
        """One device: its state, what it should run, its latest telemetry and events."""
        from edgeml.errors import FleetError
        from edgeml.fleet import views

        store = _store(ctx, store_url)
        device = store.device(device_id)
        if device is None:
            raise FleetError(f"no device {device_id!r} in the store", hint="`edgeml fleet ls` lists devices")
        rows = store.telemetry_rows(device_id=device_id, since=time.time() - 3600,
                                    columns=("seq", "version", "window_end", "requests", "errors", "p95_ms",
                                             "psi_max", "drift"))[-10:]
        out = {"device": device, "telemetry": rows, "events": views.events(store, 20, device_id)}
        if as_json:
            echo_json(out)
            return
        for k in ("device_id", "online", "model", "version", "previous_version", "update_state", "last_error",
                  "group_name", "runtime", "agent_version", "desired_version", "desired_rollout"):
            click.echo(f"{k:18} {device.get(k)}")
        click.echo(f"{'last_seen':18} {_ago(device.get('last_seen'))}")
        click.echo("recent windows:")
        for r in rows:
            click.echo(f"  #{r['seq']} {r['version']} {r['requests']} req {r['errors']} err "
                       f"p95 {_num(r['p95_ms'])} ms psi {_num(r['psi_max'], 3)}{' DRIFT' if r['drift'] else ''}")
        click.echo("events:")
        for e in out["events"]:
            click.echo(f"  {datetime.fromtimestamp(e['ts']).strftime('%H:%M:%S')} {e['event']} {e['version']} "
                       f"{e['reason'] or ''}")

    @fleet.command("simulate")
    @click.option("--devices", "n", default=20, show_default=True, help="How many agents to run.")
    @click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
                  help="Traffic: a data.npz, a train folder or a convert folder (held-out rows). "
                       "Default: draws from the model's reference profile.")
    @click.option("--rate", default=10.0, show_default=True, help="Requests per second per device.")
    @click.option("--device-ms", default=2.0, show_default=True,
                  help="Simulated board time per model call in ms (0 = this machine's speed).")
    @click.option("--fault-version", "faults", multiple=True, metavar="VERSION:KNOB=V[,..]",
                  help="Faults of one version: latency_x, latency_ms, nan, error, shift. "
                       "E.g. 3.0.0:latency_x=3 or 3.0.0:shift=1.")
    @click.option("--fault-devices", "device_faults", multiple=True, metavar="FRACTION:KNOB=V[,..]",
                  help="Faults of a share of devices: input_shift (drifted inputs, in std units), "
                       "flaky (connection drops per minute). E.g. 0.2:input_shift=1.5.")
    @click.option("--telemetry-interval", default=2.0, show_default=True, help="Seconds per telemetry window.")
    @click.option("--prefix", default="sim", show_default=True, help="Device ids are PREFIX-000, PREFIX-001, ...")
    @click.option("--group", default=None, help="Group the devices report.")
    @click.option("--follow", "follow_model", default=None, metavar="NAME",
                  help="Follow the newest release of NAME without a controller.")
    @click.option("--dir", "base_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Keep the agents' data folders here (default: a temporary folder, removed on exit).")
    @click.option("--duration", default=0.0, help="Stop after this many seconds (0 = until Ctrl-C).")
    @pass_ctx
    def simulate(ctx: Context, n: int, data: Optional[Path], rate: float, device_ms: float, faults: tuple[str, ...],
                 device_faults: tuple[str, ...], telemetry_interval: float, prefix: str, group: Optional[str],
                 follow_model: Optional[str], base_dir: Optional[Path], duration: float) -> None:
        """Run N real agents (device_agent) in this process against the broker.

        \b
        Each agent has its own data folder, MQTT connection, update state machine and
        telemetry; they verify and install releases from the broker like real devices. Traffic
        comes from held-out rows of a dataset. Fault knobs make a version slow, wrong or
        broken, or a share of the devices drifted or flaky. Needs the repository's root.json
        (created by `edgeml keys init`).
        """
        from edgeml.fleet.simulator import DeviceFault, FaultSpec, Simulator

        logging.basicConfig(level=logging.DEBUG if ctx.debug else logging.WARNING)
        sim = Simulator(
            ctx.settings, n, data=data, faults=[FaultSpec.parse(f) for f in faults],
            device_faults=[DeviceFault.parse(f) for f in device_faults], rate=rate, device_ms=device_ms,
            telemetry_interval=telemetry_interval, prefix=prefix, group=group, follow_model=follow_model,
            base_dir=base_dir,
        )
        click.echo(f"starting {n} agents on {ctx.settings.broker_url} (fleet {ctx.settings.fleet})")
        sim.start()
        started = time.monotonic()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            while not done.wait(5.0):
                st = sim.status()
                by = ", ".join(f"{v}: {k}" for v, k in sorted(st["by_version"].items()))
                click.echo(f"{time.monotonic() - started:5.0f}s  {st['requests']} requests, {st['errors']} errors; "
                           f"versions {by}")
                if duration and time.monotonic() - started >= duration:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            click.echo("stopping the agents")
            sim.stop()

    @main.group()
    def rollout() -> None:
        """Staged rollouts gated on model health, with automatic rollback."""

    @rollout.command("start")
    @click.argument("name")
    @click.argument("version")
    @click.option("--target", default="all", show_default=True, help="all, group:NAME or devices:ID1,ID2")
    @click.option("--stages", default="1,10,50,100", show_default=True,
                  help="Percentages of the target, ending at 100.")
    @click.option("--soak", default="10m", show_default=True, help="How long every gate must hold per stage.")
    @click.option("--min-devices", default=1, show_default=True, help="Least devices in the first cohort.")
    @click.option("--min-requests", default=100, show_default=True, help="Least requests before gates are judged.")
    @click.option("--gate", "gates", multiple=True, metavar="EXPR",
                  help="A gate (repeatable), e.g. p95_latency_ratio<=1.2. Defaults: update_failures<=0, "
                       "error_rate<=0.01, p95_latency_ratio<=1.2, psi<=0.2, prediction_shift<=0.1.")
    @click.option("--confirm", default="5s", show_default=True,
                  help="How long a measured gate must stay failed before the rollout halts.")
    @click.option("--shadow-first", is_flag=True,
                  help="First run the candidate as a shadow beside the active model (gate: shadow_agreement).")
    @click.option("--shadow-fraction", default=0.2, show_default=True, help="Share of requests the shadow sees.")
    @click.option("--ab", "hold", is_flag=True,
                  help="A/B: hold the first stage's split once its gates held for the soak (the rollout pauses); "
                       "compare with `edgeml telemetry summary`, then `edgeml rollout resume`.")
    @store_option
    @json_option
    @pass_ctx
    def start(ctx: Context, name: str, version: str, target: str, stages: str, soak: str, min_devices: int,
              min_requests: int, gates: tuple[str, ...], confirm: str, shadow_first: bool, shadow_fraction: float,
              hold: bool, store_url: Optional[str], as_json: bool) -> None:
        """Start rolling NAME VERSION out in stages (the running controller drives it).

        \b
        Cohorts are deterministic (hash of device and rollout). A stage advances when every
        gate held for the soak with the minimum sample; a failing gate halts the rollout, sends
        the cohort back to the previous version and raises an alert. One active rollout per
        model name. Modes: canary = the first stage; rolling = the stages; A/B = --ab (hold the
        first split, compare with `edgeml telemetry summary`); shadow = --shadow-first.
        """
        from edgeml.fleet.controller import check_published
        from edgeml.fleet.engine import Engine, start_rollout

        store = _store(ctx, store_url)
        check_published(ctx.settings, name, version)
        r = start_rollout(store, name, version, target=target, stages=stages, soak=soak, min_devices=min_devices,
                          min_requests=min_requests, gates=list(gates) or None, shadow_first=shadow_first,
                          shadow_fraction=shadow_fraction, confirm=confirm, hold=hold)
        st = Engine(store, lambda *_: None).status(r)
        if as_json:
            echo_json(st)
            return
        _status_lines(st)
        click.echo("the controller (`edgeml fleet serve`) drives it from its next tick")

    @rollout.command("status")
    @click.argument("ref", required=False)
    @store_option
    @json_option
    @pass_ctx
    def status(ctx: Context, ref: Optional[str], store_url: Optional[str], as_json: bool) -> None:
        """Show rollouts (all, or one by id or model name): stage, devices, gate values."""
        from edgeml.fleet.engine import Engine

        store = _store(ctx, store_url)
        engine = Engine(store, lambda *_: None)
        items = [store.find_rollout(ref)] if ref else store.rollouts()
        out = [engine.status(r) for r in items]
        if as_json:
            echo_json(out[0] if ref else {"rollouts": out})
            return
        if not out:
            click.echo("no rollouts yet (`edgeml rollout start NAME VERSION`)")
        for st in out:
            _status_lines(st)

    for command_name, doc in (
        ("pause", "Hold a running rollout at its stage (gates are still judged; a failure still halts)."),
        ("resume", "Continue a paused rollout."),
        ("abort", "Stop a rollout and send every targeted device back to the previous version."),
        ("promote", "Advance a rollout to its next stage now, without waiting for the soak."),
    ):

        def make(cmd: str, help_text: str) -> None:
            @rollout.command(cmd, help=help_text)
            @click.argument("ref")
            @click.option("--wait", default=5.0, show_default=True,
                          help="Seconds to wait for the controller to apply it (0 = just queue it).")
            @store_option
            @json_option
            @pass_ctx
            def _cmd(ctx: Context, ref: str, wait: float, store_url: Optional[str], as_json: bool) -> None:
                from edgeml.fleet.engine import Engine, queue_command

                store = _store(ctx, store_url)
                r, cid = queue_command(store, ref, cmd)
                deadline = time.monotonic() + wait
                result = None
                while time.monotonic() < deadline:
                    row = store.command(cid)
                    if row and row["applied_at"]:
                        result = row["result"]
                        break
                    time.sleep(0.2)
                st = Engine(store, lambda *_: None).status(store.rollout(r.id) or r)
                if as_json:
                    echo_json({"command": cmd, "result": result or "queued", "rollout": st})
                    return
                click.echo(f"{cmd} {r.id}: {result or 'queued (the controller applies it on its next tick)'}")

        make(command_name, doc)

    @main.group()
    def telemetry() -> None:
        """Merged telemetry of the fleet."""

    @telemetry.command("summary")
    @click.argument("name")
    @click.option("--version", "version", default=None, help="Only this version.")
    @click.option("--since", default="1h", show_default=True, help="Windows that ended within this time.")
    @store_option
    @json_option
    @pass_ctx
    def summary(ctx: Context, name: str, version: Optional[str], since: str, store_url: Optional[str],
                as_json: bool) -> None:
        """Merged windows per version: p50/p95/p99, error rate, PSI per feature, class distribution."""
        from edgeml.fleet import views
        from edgeml.fleet.controller import release_manifest_lookup
        from edgeml.fleet.rollout import parse_duration

        store = _store(ctx, store_url)
        lookup = release_manifest_lookup(ctx.settings)
        out = []
        for row in views.telemetry_summary(store, name, version, parse_duration(since)):
            m = lookup(name, row["version"])
            if m is not None and m.reference.features:
                row = views.telemetry_summary(store, name, row["version"], parse_duration(since),
                                              reference_freqs=m.reference.feature_freqs)[0]
            out.append(row)
        if as_json:
            echo_json({"model": name, "since_s": parse_duration(since), "versions": out})
            return
        if not out:
            click.echo(f"no telemetry for {name} in the last {since}")
        for r in out:
            click.echo(f"{name} {r['version']}: {r['devices']} devices, {r['windows']} windows, "
                       f"{r['requests']} requests")
            click.echo(f"  latency p50 {_num(r['p50_ms'])} ms  p95 {_num(r['p95_ms'])} ms  p99 {_num(r['p99_ms'])} ms")
            click.echo(f"  error rate {_num(r['error_rate'], 4)}  ({r['errors']} errors, {r['nonfinite']} non-finite)")
            if r["psi_per_feature"]:
                worst = sorted(enumerate(r["psi_per_feature"]), key=lambda t: -(t[1] or 0))[:5]
                click.echo("  psi (worst features): " + ", ".join(f"#{i} {_num(v, 3)}" for i, v in worst))
            elif r["psi_reported_max"] is not None:
                click.echo(f"  psi (largest a device reported): {_num(r['psi_reported_max'], 3)}")
            if r["classes"]:
                click.echo("  classes: " + ", ".join(f"{k} {v:.1%}" for k, v in r["classes"].items()))
            if r["shadow_agreement"] is not None:
                click.echo(f"  shadow agreement {r['shadow_agreement']:.1%}")
