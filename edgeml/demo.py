"""The main job end to end, on embedded defaults (``edgeml demo``).

1. train the digits CNN twice (v1, and v2 retrained with another seed) and convert both, in a
   child process (:mod:`edgeml.demo_models`), keeping the selected variant of each;
2. a private broker (Mosquitto on a free port, else the embedded one);
3. keys, publish v1; a fleet controller with its dashboard; a simulated fleet of real agents fed
   with held-out digits; roll v1 out;
4. publish v2 and roll it out in stages gated on telemetry, to 100%;
5. publish v3, which runs much slower on the devices (the simulator's slow-model fault for that
   version), and watch its rollout halt at the first stage and roll back on its own;
6. a summary (versions, stages, gate values, devices per version) and the outcome check:
   v2 on every device, v3 on none.

Everything lives in one project home; everything started here is stopped on exit or Ctrl-C.
All training happens before the fleet starts, so the gates never judge latencies measured while
TensorFlow was eating the CPU. The fleet is read back through the controller's JSON API (the
dashboard's), so the summary shows what the dashboard shows.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from device_agent.protocol.versions import version_key
from edgeml.demo_models import Models, build_models_in_child, reuse_models
from edgeml.errors import FleetError, UsageError
from edgeml.settings import Settings, load_settings

MODEL = "digits"
V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"
TERMINAL = ("completed", "halted", "aborted")


@dataclass
class DemoConfig:
    """Knobs of the demo. The defaults are the full story (about two minutes on two cores)."""

    home: Path
    devices: int = 20
    epochs: int = 12
    seed: int = 0
    stages: tuple[float, ...] = (10.0, 50.0, 100.0)
    soak_s: float = 10.0
    telemetry_interval: float = 5.0
    request_rate: float = 40.0
    slow_factor: float = 6.0
    min_requests: int = 100
    broker: Optional[str] = None
    broker_kind: str = "auto"
    fleet: str = "demo"
    http_port: int = 0
    rollout_timeout_s: float = 150.0
    keep_running: bool = False
    models_from: Optional[Path] = None

    def validate(self) -> None:
        """Raise UsageError for settings the demo cannot run with."""
        if not 2 <= self.devices <= 500:
            raise UsageError(f"--devices {self.devices}: the demo needs between 2 and 500 devices", hint="e.g. 20")
        if self.epochs < 1:
            raise UsageError("--epochs must be at least 1")
        if self.soak_s < 0:
            raise UsageError("--soak must not be negative")
        if not self.stages or self.stages[-1] != 100.0:
            raise UsageError("the demo's stages must end at 100", hint="e.g. 10,50,100")
        if self.slow_factor <= 1.5:
            raise UsageError("--slow-factor must be above 1.5 for v3 to be visibly broken", hint="e.g. 6")
        if (Path(self.home) / "repository").exists() or (Path(self.home) / "keys").exists():
            raise UsageError(
                f"{self.home} already holds a repository or keys (an earlier run?)",
                hint="the demo starts from nothing: pass a new --home (or leave it out for a fresh folder); "
                f"--models-from {self.home} reuses its trained models",
            )


@dataclass
class RolloutSummary:
    """One rollout as the demo saw it end."""

    version: str
    previous_version: Optional[str]
    state: str
    stages: list[float]
    stage_index: int
    reason: Optional[str]
    gates: list[dict[str, Any]]
    seconds: float
    stage_log: list[StageOutcome] = field(default_factory=list)


@dataclass
class StageOutcome:
    """How one stage of a rollout ended, with the gate values that decided it."""

    stage: int
    pct: float
    outcome: str
    seconds: Optional[float]
    gates: list[dict[str, Any]]


@dataclass
class DemoResult:
    """What happened: rollouts, devices per version, the verdict and where the dashboard is."""

    ok: bool
    verdict: str
    dashboard: str
    broker: str
    home: str
    devices: int
    versions: dict[str, int] = field(default_factory=dict)
    rollouts: list[RolloutSummary] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reporter:
    """How the demo tells a person what it does. The CLI renders it with rich; the default prints."""

    def phase(self, title: str) -> None:
        print(f"== {title}")

    def info(self, text: str) -> None:
        print(f"   {text}")

    def block(self, text: str) -> None:
        """Preformatted text (a table) printed as it is, never re-wrapped."""
        print(text)

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Callable[..., None]]:
        """A unit of long work; yields ``update(completed=None, description=None)``."""
        print(f"   {description} …")

        def update(completed: Optional[float] = None, description: Optional[str] = None) -> None:
            return None

        yield update

    def rollout(self, snapshot: dict[str, Any]) -> None:
        """Called on every poll while a rollout runs (the API's rollout record)."""

    def summary(self, result: DemoResult) -> None:
        """The end: rollouts with their stages and gates, devices per version, the verdict."""
        for r in result.rollouts:
            print(f"   {r.version} (from {r.previous_version or '-'}): {r.state} in {r.seconds:.0f}s")
            for st in r.stage_log:
                gates = "; ".join(gate_text(g) for g in st.gates)
                print(f"      stage {st.stage + 1} ({st.pct:g}%): {st.outcome}; {gates}")
        print(f"   devices per version: {result.versions}")
        print(f"   {result.verdict}")


def gate_text(g: dict[str, Any]) -> str:
    """``p95_latency_ratio 1.02 <= 1.2`` (or ``... n/a: no control group``)."""
    value = g.get("value")
    if value is None:
        return f"{g.get('name')} n/a{': ' + g['note'] if g.get('note') else ''}"
    return f"{g.get('name')} {value:.3g} {g.get('op')} {g.get('threshold'):g}"


class FleetAPI:
    """The controller's JSON API (docs/INTERFACES.md §4), read the way the dashboard reads it."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str) -> Any:
        """GET a JSON document. Raises FleetError when the controller does not answer."""
        url = f"{self.base_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FleetError(f"the fleet controller at {url} did not answer: {exc}") from exc

    def devices(self) -> list[dict[str, Any]]:
        return list(self.get("/api/fleet").get("devices", []))

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/rollouts").get("rollouts", []))

    def rollout(self, model: str, version: str) -> Optional[dict[str, Any]]:
        """The newest rollout record of model@version, or None."""
        found = [r for r in self.rollouts() if r.get("model") == model and r.get("version") == version]
        return found[-1] if found else None

    def versions(self, online_only: bool = True) -> dict[str, int]:
        """Devices per version (``"none"`` for devices without a model)."""
        counts: dict[str, int] = {}
        for d in self.devices():
            if online_only and not d.get("online"):
                continue
            key = d.get("version") or "none"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: version_key(kv[0]) if kv[0] != "none" else (-1,)))


def check_outcome(versions: dict[str, int], devices: int, rollouts: Sequence[RolloutSummary]) -> tuple[bool, str]:
    """The demo's promise: v2 on every device, v3 on none, v2's rollout completed, v3's halted."""
    by_version = {r.version: r for r in rollouts}
    problems = []
    if versions.get(V2, 0) != devices:
        problems.append(f"{versions.get(V2, 0)} of {devices} devices run {V2}")
    if versions.get(V3, 0):
        problems.append(f"{versions[V3]} devices still run {V3}")
    r2, r3 = by_version.get(V2), by_version.get(V3)
    if r2 is None or r2.state != "completed":
        problems.append(f"the {V2} rollout is {r2.state if r2 else 'missing'}, not completed")
    if r3 is None or r3.state != "halted":
        problems.append(f"the {V3} rollout is {r3.state if r3 else 'missing'}, not halted")
    elif r3.stage_index != 0:
        problems.append(f"the {V3} rollout halted at stage {r3.stage_index + 1}, not the first")
    if problems:
        return False, "NOT as expected: " + "; ".join(problems)
    return True, (
        f"{V2} runs on all {devices} devices and {V3} on none: its rollout halted at the first stage and rolled back"
    )


def stage_log(record: dict[str, Any]) -> list[StageOutcome]:
    """Per stage: passed/halted/aborted (or the live state) with the gates that decided it, from the
    rollout's history."""
    stages = [float(s) for s in record.get("stages") or []]
    started: dict[int, float] = {}
    out: dict[int, StageOutcome] = {}
    current = -1
    for h in record.get("history") or []:
        event = h.get("event")
        if event == "stage_started":
            current = int(h.get("stage", current + 1))
            started[current] = float(h.get("t") or 0.0)
        elif event in ("stage_passed", "halted", "aborted") and current >= 0:
            t0 = started.get(current)
            seconds = round(float(h["t"]) - t0, 1) if t0 and h.get("t") else None
            outcome = "passed" if event == "stage_passed" else event
            out[current] = StageOutcome(current, stages[current] if current < len(stages) else 0.0, outcome,
                                        seconds, list(h.get("gates") or []))
    if current >= 0 and current not in out and record.get("state") in ("running", "paused"):
        out[current] = StageOutcome(current, stages[current] if current < len(stages) else 0.0,
                                    str(record.get("state")), None, list(record.get("gates") or []))
    return [out[k] for k in sorted(out)]


def summarize_rollout(record: dict[str, Any], seconds: float) -> RolloutSummary:
    return RolloutSummary(
        version=str(record.get("version")),
        previous_version=record.get("previous_version"),
        state=str(record.get("state")),
        stages=[float(s) for s in record.get("stages", [])],
        stage_index=int(record.get("stage_index") or 0),
        reason=record.get("reason"),
        gates=list(record.get("gates") or []),
        seconds=round(seconds, 1),
        stage_log=stage_log(record),
    )


def demo_settings(config: DemoConfig, broker_url: str) -> Settings:
    """Settings rooted in the demo's home, pointing at its broker and fleet."""
    return load_settings(config.home, env={}, broker=broker_url, fleet=config.fleet)


def default_home(base: Path = Path(".edgeml") / "demo") -> Path:
    """A fresh folder under ``.edgeml/demo`` named after the current time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / stamp
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{n}"
    return path


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5, hint: str = ""
) -> None:
    """Poll ``predicate`` until it holds. Raises FleetError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise FleetError(f"timed out after {timeout:.0f}s waiting for {what}", hint=hint)


# ---------------------------------------------------------------------------------------------
# the story


def _publish(settings: Settings, source: Path, version: str, reporter: Reporter, note: str = "") -> dict[str, Any]:
    from edgeml.release.publish import publish

    with reporter.task(f"publish {MODEL} {version}{note}: sign, write the repository, push to the broker") as update:
        result = publish(settings, source, name=MODEL, version=version,
                         progress=lambda done, total: update(description=f"publish {version}: {done}/{total} messages"))
    reporter.info(f"published {result['target_path']} ({result['length'] / 1024:.0f} KiB in {result['chunks']} "
                  f"chunks, sha256 {str(result.get('sha256', ''))[:12]}…)")
    return result


def _gates_line(gates: Sequence[dict[str, Any]]) -> str:
    marks = {True: "✓", False: "✗", None: "…"}
    return ", ".join(f"{gate_text(g)} {marks.get(g.get('ok'), '…')}" for g in gates) or "–"


def _history_lines(record: dict[str, Any], seen: int) -> list[str]:
    """Lines for the rollout's history entries after the first ``seen``."""
    version = record.get("version")
    stages = record.get("stages") or []
    lines = []
    stage = -1
    for k, h in enumerate(record.get("history") or []):
        event = h.get("event")
        if event == "stage_started":
            stage = int(h.get("stage", stage + 1))
        if k < seen:
            continue
        where = f"stage {stage + 1}/{len(stages)} ({stages[stage]:g}%)" if 0 <= stage < len(stages) else "stage"
        if event == "stage_started":
            lines.append(f"{version}: {where} started")
        elif event == "stage_passed":
            lines.append(f"{version}: {where} passed; gates: {_gates_line(h.get('gates') or [])}")
        elif event == "halted":
            lines.append(f"{version}: HALTED at {where}; gates: {_gates_line(h.get('gates') or [])}")
            lines.append(f"{version}: its cohort goes back to {record.get('previous_version')}")
        elif event in ("completed", "aborted", "paused", "resumed"):
            lines.append(f"{version}: {event}{': ' + h['detail'] if h.get('detail') else ''}")
    return lines


def _watch_rollout(
    api: FleetAPI, version: str, config: DemoConfig, reporter: Reporter, started: float, n_stages: int
) -> RolloutSummary:
    """Follow a rollout until it ends (completed/halted/aborted); report each stage as it starts and
    ends, with the gate values that decided it."""
    record: Optional[dict[str, Any]] = None
    seen = 0
    deadline = time.monotonic() + config.rollout_timeout_s
    with reporter.task(f"rollout {version}", total=float(n_stages)) as update:
        while time.monotonic() < deadline:
            record = api.rollout(MODEL, version)
            if record is not None:
                reporter.rollout(record)
                history = record.get("history") or []
                for line in _history_lines(record, seen):
                    reporter.info(line)
                seen = len(history)
                idx = int(record.get("stage_index") or 0)
                stages = record.get("stages") or list(config.stages)
                pct = stages[min(idx, len(stages) - 1)]
                at, cohort = record.get("devices_at_version") or 0, record.get("cohort_size") or 0
                state = str(record.get("state"))
                done = float(len(stages)) if state == "completed" else float(idx)
                update(completed=done, description=f"rollout {version}: stage {idx + 1}/{len(stages)} ({pct:g}%), "
                                                   f"{at}/{cohort} devices at {version}, {state}")
                if state in TERMINAL:
                    break
            time.sleep(0.5)
        else:
            raise FleetError(
                f"the {version} rollout did not finish within {config.rollout_timeout_s:.0f}s "
                f"(last state: {record.get('state') if record else 'never started'})",
                hint="the machine may be too busy; try fewer --devices or a shorter --soak",
            )
    assert record is not None
    return summarize_rollout(record, time.monotonic() - started)


def _rollout(
    controller: Any, api: FleetAPI, version: str, config: DemoConfig, reporter: Reporter, stages: Sequence[float],
    gates: Optional[Sequence[str]] = None,
) -> RolloutSummary:
    started = time.monotonic()
    options: dict[str, Any] = {
        "stages": list(stages),
        "soak": config.soak_s,
        "min_requests": config.min_requests,
        "min_devices": 1,
    }
    if gates is not None:
        options["gates"] = list(gates)
    status = controller.start_rollout(MODEL, version, **options)
    from edgeml.fleet.gates import DEFAULT_GATES

    gate_specs = ", ".join(gates if gates is not None else DEFAULT_GATES)
    stage_text = ", ".join(f"{s:g}%" for s in stages)
    reporter.info(
        f"rollout {status.get('id')}: {MODEL} {status.get('previous_version') or '(nothing)'} -> {version}, "
        f"stages {stage_text}, soak {config.soak_s:g}s per stage, gates: {gate_specs}"
    )
    return _watch_rollout(api, version, config, reporter, started, len(stages))


def _keep_running(reporter: Reporter, dashboard: str) -> None:
    reporter.info(f"the fleet keeps running; dashboard at {dashboard}; press Ctrl-C to stop everything")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        reporter.info("stopping")


def run_demo(config: DemoConfig, reporter: Optional[Reporter] = None) -> DemoResult:
    """Run the whole story (see the module doc) and return what happened.

    Stops everything it started on return, on an error and on Ctrl-C (KeyboardInterrupt passes
    through after the clean-up). Raises UsageError for bad settings, FleetError when a rollout
    does not finish in time, and the errors of the parts it drives (pipeline, release, fleet).
    """
    from edgeml.broker_proc import start_private_broker
    from edgeml.fleet.controller import Controller
    from edgeml.pipeline.report import render_variant_table
    from edgeml.release.keys import init_keys

    reporter = reporter or Reporter()
    config.validate()
    config.home = Path(config.home)
    config.home.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.monotonic()

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 1)
        return now

    with contextlib.ExitStack() as stack:
        # 1. models first: nothing else competes for the CPU while TensorFlow trains
        reporter.phase("1/5 models: train, convert, choose")
        t = time.monotonic()
        if config.models_from is not None:
            models = reuse_models(config.models_from, config.home, reporter)
        else:
            models = build_models_in_child(config.home, config.epochs, config.seed, reporter)
        reporter.block(render_variant_table(models.report_v1))
        t = lap("models_s", t)

        # 2. broker, keys, v1
        reporter.phase("2/5 broker, keys, v1")
        if config.broker:
            broker_url = config.broker
            reporter.info(f"using the broker at {broker_url}")
        else:
            broker = start_private_broker(config.home / "broker", prefer=config.broker_kind)
            stack.callback(broker.stop)
            broker_url = broker.url
            reporter.info(f"started a private {broker.kind} broker at {broker_url}")
        settings = demo_settings(config, broker_url)
        keys = init_keys(settings)
        reporter.info(f"keys and the initial root in {keys.get('keys_dir', settings.keys_dir)}")
        _publish(settings, models.v1_convert, V1, reporter)

        # 3. controller + dashboard + fleet
        reporter.phase(f"3/5 fleet: controller, dashboard, {config.devices} simulated devices, v1 everywhere")
        controller = Controller(settings, broker_url=broker_url, http_port=config.http_port, tick_interval=0.5)
        controller.start()
        stack.callback(controller.stop)
        dashboard = f"{controller.url}/"
        api = FleetAPI(str(controller.url))
        reporter.info(f"dashboard: {dashboard}")
        fleet = _start_fleet(settings, broker_url, models, config, reporter)
        stack.callback(fleet.stop)
        wait_for(lambda: len([d for d in api.devices() if d.get("online")]) >= config.devices, 60,
                 f"{config.devices} devices to come online")
        rollouts = [_rollout(controller, api, V1, config, reporter, stages=[100.0])]
        t = lap("v1_s", t)

        # 4. v2 in stages to 100%
        reporter.phase(f"4/5 v2 (retrained): staged rollout {', '.join(f'{s:g}%' for s in config.stages)}")
        _publish(settings, models.v2_convert, V2, reporter)
        rollouts.append(_rollout(controller, api, V2, config, reporter, stages=config.stages))
        t = lap("v2_s", t)

        # 5. broken v3: halts at its first stage, rolls back
        if rollouts[-1].state == "completed":
            reporter.phase(f"5/5 v3, broken (the devices run it slowly: fault latency_x={config.slow_factor:g}): "
                           "watch it halt and roll back")
            _publish(settings, models.v2_convert, V3, reporter, note=" (v2's model; the devices run it slowly)")
            rollouts.append(_rollout(controller, api, V3, config, reporter, stages=config.stages))
            # the halted cohort goes back to v2: wait until every device runs it again
            with contextlib.suppress(FleetError):
                wait_for(lambda: api.versions().get(V2, 0) == config.devices and not api.versions().get(V3), 60,
                         f"every device back on {V2}")
            t = lap("v3_s", t)
        else:
            reporter.info(f"{V2} did not reach every device ({rollouts[-1].state}): v3 is not published")

        versions = api.versions()
        ok, verdict = check_outcome(versions, config.devices, rollouts)
        timings["total_s"] = round(time.monotonic() - t_start, 1)
        result = DemoResult(ok=ok, verdict=verdict, dashboard=dashboard, broker=broker_url,
                            home=str(config.home.resolve()), devices=config.devices, versions=versions,
                            rollouts=rollouts, timings=timings)
        reporter.phase("summary")
        reporter.summary(result)
        if config.keep_running:
            _keep_running(reporter, dashboard)
        return result


def _start_fleet(settings: Settings, broker_url: str, models: Models, config: DemoConfig, reporter: Reporter) -> Any:
    """Start the simulated fleet: real agents fed with held-out digits; v3 runs slowly on them."""
    from edgeml.fleet.simulator import FaultSpec, Simulator

    sim = Simulator(
        settings,
        config.devices,
        broker_url=broker_url,
        data=models.v1_train / "data.npz",
        faults=[FaultSpec(V3, {"latency_x": config.slow_factor})],
        rate=config.request_rate,
        telemetry_interval=config.telemetry_interval,
        base_dir=config.home / "devices",
        prefix="dev",
        seed=config.seed,
    )
    with reporter.task(f"start {config.devices} agents (real device_agent code, one process)"):
        sim.start()
    n_rows = len(sim.rows) if sim.rows is not None else 0
    reporter.info(f"{config.devices} agents up, each sending {config.request_rate:g} requests/s drawn from "
                  f"{n_rows} held-out digits; telemetry every {config.telemetry_interval:g}s")
    return sim
