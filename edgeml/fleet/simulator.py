"""A simulated fleet of real agents: ``N`` :class:`device_agent.agent.Agent` in one process, each with
its own data folder, MQTT connection, last will, update state machine, slots and telemetry, fed
with traffic from a dataset, with fault knobs.

Faults:

- the simulated board: every model call takes at least ``device_ms`` (default 2 ms, a small
  board; 0 = as fast as this machine). Many agents share one interpreter here, so a call on a
  tiny model (~15 us) mostly measures waiting for another thread; a device time well above that
  wait keeps the latency the agents report about the model, as it would be on a real board;
- per version (``FaultSpec.parse("3.0.0:latency_x=3")``), through the Agent's ``runtime_wrapper``:
  ``latency_x`` (multiply the model's time), ``latency_ms`` (add time), ``nan`` (share of calls
  answered with NaN), ``error`` (share of calls that raise), ``shift`` (rotate the class outputs by
  this many places: drifted predictions). Golden-vector inputs pass untouched, so a faulty model
  passes its self-test and is caught by probation or by the fleet's gates, as a real one would be;
- per device (``DeviceFault.parse("0.2:input_shift=1.5,flaky=6")``) for a share of the devices:
  ``input_shift`` (add this many feature standard deviations to every input: drifted inputs),
  ``flaky`` (drop the device's connection this many times per minute: a flaky network).

Library use (tests, the demo)::

    sim = Simulator(settings, devices=20, data=Path("runs/digits"), faults=[FaultSpec.parse("3.0.0:latency_x=3")])
    sim.start(); ...; sim.versions(); sim.stop()
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from device_agent.protocol import ModelManifest
from edgeml.errors import UsageError
from edgeml.settings import Settings

log = logging.getLogger("edgeml.fleet.simulator")

VERSION_KNOBS = ("latency_x", "latency_ms", "nan", "error", "shift")
DEVICE_KNOBS = ("input_shift", "flaky")


def _knobs(text: str, allowed: Sequence[str], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise UsageError(f"{what}: {part!r} is not KNOB=NUMBER", hint=f"knobs: {', '.join(allowed)}")
        try:
            out[key] = float(value)
        except ValueError as exc:
            raise UsageError(f"{what}: {value!r} is not a number") from exc
    if not out:
        raise UsageError(f"{what}: no knob given", hint=f"e.g. {allowed[0]}=3")
    return out


@dataclass(frozen=True)
class FaultSpec:
    """Faults of one model version."""

    version: str
    knobs: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``VERSION:knob=value[,knob=value]``. Raises UsageError."""
        version, sep, rest = text.partition(":")
        if not sep or not version:
            raise UsageError(f"fault {text!r} is not VERSION:KNOB=VALUE", hint="e.g. --fault-version 3.0.0:latency_x=3")
        return cls(version.strip(), _knobs(rest, VERSION_KNOBS, f"fault {text!r}"))


@dataclass(frozen=True)
class DeviceFault:
    """Faults of a share of the devices."""

    fraction: float
    knobs: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DeviceFault:
        """``FRACTION:knob=value[,...]``. Raises UsageError."""
        frac, sep, rest = text.partition(":")
        try:
            fraction = float(frac)
        except ValueError as exc:
            raise UsageError(f"device fault {text!r}: {frac!r} is not a fraction", hint="e.g. 0.2:flaky=6") from exc
        if not sep or not 0 < fraction <= 1:
            raise UsageError(f"device fault {text!r} is not FRACTION:KNOB=VALUE", hint="e.g. 0.2:input_shift=1.5")
        return cls(fraction, _knobs(rest, DEVICE_KNOBS, f"device fault {text!r}"))


class FaultyRuntime:
    """Wraps a real runtime and applies a version's faults (golden inputs pass untouched)."""

    def __init__(self, inner: Any, manifest: ModelManifest, knobs: dict[str, float], seed: int = 0) -> None:
        self.inner = inner
        self.knobs = knobs
        self.rng = random.Random(seed)
        self.golden = [np.asarray(g.input, dtype=np.float32).ravel() for g in manifest.golden]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _is_golden(self, batch: np.ndarray) -> bool:
        if batch.shape[0] != 1:
            return False
        row = np.asarray(batch, dtype=np.float32).ravel()
        return any(g.shape == row.shape and np.allclose(g, row, atol=1e-6) for g in self.golden)

    def run(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        y = self.inner.run(batch)
        k = self.knobs
        base = k.get("device_ms", 0.0) / 1000.0
        if self._is_golden(batch):
            self._wait(t0, max(time.perf_counter() - t0, base))
            return y  # type: ignore[no-any-return]
        if k.get("error") and self.rng.random() < k["error"]:
            raise RuntimeError("simulated runtime failure")
        if k.get("shift"):
            y = np.roll(y, int(k["shift"]), axis=-1)
        if k.get("nan") and self.rng.random() < k["nan"]:
            y = np.full_like(y, np.nan)
        took = max(time.perf_counter() - t0, base)
        self._wait(t0, took * k.get("latency_x", 1.0) + k.get("latency_ms", 0.0) / 1000.0)
        return y  # type: ignore[no-any-return]

    @staticmethod
    def _wait(t0: float, total: float) -> None:
        """Return ``total`` seconds after ``t0``: sleep (other agents run meanwhile), then spin the
        last fraction of a millisecond for precision."""
        deadline = t0 + total
        left = deadline - time.perf_counter()
        if left > 0.0005:
            time.sleep(left - 0.0003)
        while time.perf_counter() < deadline:
            pass

    def warm_up(self, sample_shape: list[int], rounds: int = 2) -> None:
        self.inner.warm_up(sample_shape, rounds)

    def close(self) -> None:
        self.inner.close()


def load_rows(data: Optional[Path]) -> Optional[np.ndarray]:
    """Held-out rows for traffic: a ``.npz`` (``x_test``, else ``x_val``/``x``), a train folder
    (``data.npz``) or a convert folder (its report's ``model_dir``). Raises UsageError."""
    if data is None:
        return None
    path = Path(data)
    if path.is_dir():
        report = path / "report.json"
        if (path / "data.npz").is_file():
            path = path / "data.npz"
        elif report.is_file():
            model_dir = Path(json.loads(report.read_text()).get("model_dir", ""))
            if not model_dir.is_absolute():
                model_dir = (path / model_dir) if (path / model_dir).exists() else model_dir
            path = model_dir / "data.npz"
    if not path.is_file():
        raise UsageError(f"no traffic data at {data}", hint="pass a data.npz, a train folder or a convert folder")
    with np.load(path) as npz:
        for key in ("x_test", "x_val", "x", "x_train"):
            if key in npz:
                return np.asarray(npz[key], dtype=np.float32)
    raise UsageError(f"{path} holds no x_test/x_val/x array", hint="use the data.npz that `edgeml train` writes")


def reference_rows(manifest: ModelManifest, n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows drawn from the manifest's reference profile (raw features), else uniform in [0, 1)."""
    shape = manifest.inputs[0].sample_shape
    feats = manifest.reference.features
    size = int(np.prod([max(d, 1) for d in shape])) if shape else 1
    if manifest.reference.feature_kind == "raw" and feats and len(feats) == size:
        cols = []
        for f in feats:
            edges = list(f.edges)
            width = (edges[-1] - edges[0]) / max(1, len(edges) - 1) if len(edges) > 1 else 1.0
            bounds = [edges[0] - width, *edges, edges[-1] + width] if edges else [0.0, 1.0]
            p = np.asarray(f.freqs, dtype=float)
            p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / len(p))
            b = rng.choice(len(p), size=n, p=p)
            lo, hi = np.asarray(bounds[:-1])[b], np.asarray(bounds[1:])[b]
            cols.append(rng.uniform(lo, hi))
        return np.stack(cols, axis=1).astype(np.float32).reshape([n, *[max(d, 1) for d in shape]])
    return rng.uniform(0, 1, size=[n, *[max(d, 1) for d in shape]]).astype(np.float32)


class Simulator:
    """``devices`` real agents named ``<prefix>-000``... . See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        devices: int = 20,
        *,
        broker_url: Optional[str] = None,
        data: Optional[Path] = None,
        faults: Sequence[FaultSpec] = (),
        device_faults: Sequence[DeviceFault] = (),
        rate: float = 20.0,
        device_ms: float = 2.0,
        traffic_threads: int = 8,
        telemetry_interval: float = 2.0,
        probation_requests: int = 10,
        probation_seconds: float = 1.0,
        probation_latency_factor: float = 5.0,
        base_dir: Optional[Path] = None,
        prefix: str = "sim",
        group: Optional[str] = None,
        follow_model: Optional[str] = None,
        trusted_root: Optional[Path] = None,
        seed: int = 0,
    ) -> None:
        if devices < 1:
            raise UsageError("--devices must be at least 1")
        if rate <= 0:
            raise UsageError("--rate must be positive")
        self.settings = settings
        self.broker_url = broker_url or settings.broker
        self.n = devices
        self.rows = load_rows(data)
        self.faults = {f.version: f.knobs for f in faults}
        self.rate = rate
        self.device_ms = device_ms
        self.traffic_threads = max(1, min(traffic_threads, devices))
        self.telemetry_interval = telemetry_interval
        self.probation_requests = probation_requests
        self.probation_seconds = probation_seconds
        # many agents share this machine: a burst of them switching models at once can push one
        # device's first few latencies past the manifest's absolute budget, which a board of its own
        # would not see; the fleet's gates judge latency against the control group instead
        self.probation_latency_factor = probation_latency_factor
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="edgeml-sim-"))
        self.prefix = prefix
        self.group = group
        self.follow_model = follow_model
        self.trusted_root = trusted_root or self._find_root()
        self.rng = np.random.default_rng(seed)
        self.ids = [f"{prefix}-{i:03d}" for i in range(devices)]
        self.device_knobs: dict[str, dict[str, float]] = {}
        order = list(self.ids)
        random.Random(seed).shuffle(order)
        start = 0
        for df in device_faults:
            k = max(1, round(df.fraction * devices))
            for dev in order[start:start + k]:
                self.device_knobs.setdefault(dev, {}).update(df.knobs)
            start += k
        self.agents: dict[str, Any] = {}
        self.requests = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._std: Optional[np.ndarray] = None
        self._switch = sys.getswitchinterval()
        if self.rows is not None:
            self._std = self.rows.reshape(len(self.rows), -1).std(axis=0) + 1e-6

    def _find_root(self) -> Path:
        meta = self.settings.repo_dir / "metadata"
        for name in ("root.json", "1.root.json"):
            if (meta / name).is_file():
                return meta / name
        raise UsageError(
            f"no trusted root in {meta}",
            hint="create keys and publish first (`edgeml keys init`, `edgeml publish ...`), or pass trusted_root",
        )

    # agents ------------------------------------------------------------------------------------
    def _wrapper(self, device_id: str) -> Any:
        def wrap(runtime: Any, manifest: ModelManifest) -> Any:
            knobs = dict(self.faults.get(manifest.version, {}))
            if self.device_ms:
                knobs["device_ms"] = self.device_ms
            if not knobs:
                return runtime
            return FaultyRuntime(runtime, manifest, knobs, seed=hash(device_id) & 0xFFFF)

        return wrap

    def make_agent(self, device_id: str) -> Any:
        from device_agent.agent import Agent, AgentConfig

        cfg = AgentConfig(
            device_id=device_id,
            fleet=self.settings.fleet,
            broker=self.broker_url,
            data_dir=self.base_dir / device_id,
            http_address=None,
            model=self.follow_model,
            group=self.group,
            trusted_root=self.trusted_root,
            telemetry_interval=self.telemetry_interval,
            probation_requests=self.probation_requests,
            probation_seconds=self.probation_seconds,
            probation_latency_factor=self.probation_latency_factor,
            update_check_interval=5.0,
            audit_log=False,
            reconnect_max_s=2.0,
            log_level="warning",
        )
        return Agent(cfg, runtime_wrapper=self._wrapper(device_id))

    def start(self) -> Simulator:
        """Start every agent and the traffic. Raises ConfigError/UsageError from the agents' settings.

        Many agents share one interpreter here, so a predict call can wait for another thread's
        turn; a shorter thread switch interval keeps that wait, which a real device would not have,
        from dominating the latency the agents measure."""
        self._stop.clear()
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, 0.001))
        for dev in self.ids:
            self.agents[dev] = self.make_agent(dev).start()
        for k in range(self.traffic_threads):
            self._spawn(lambda k=k: self._traffic(self.ids[k::self.traffic_threads]), f"sim-traffic-{k}")
        if any("flaky" in k for k in self.device_knobs.values()):
            self._spawn(self._flaky, "sim-flaky")
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._threads = []
        for agent in list(self.agents.values()):
            try:
                agent.stop()
            except Exception:  # noqa: BLE001 - stop the others anyway
                log.exception("stopping an agent failed")
        self.agents = {}
        sys.setswitchinterval(self._switch)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def stop_device(self, device_id: str, power_cut: bool = True) -> None:
        """Take one device offline; its data folder stays. ``power_cut`` drops the connection
        without a goodbye first, so the broker publishes the device's last will (offline)."""
        agent = self.agents.pop(device_id, None)
        if agent is None:
            return
        transport = getattr(agent, "transport", None)
        if power_cut and transport is not None:
            transport._stop.set()  # noqa: SLF001 - no reconnect: the board is off
            try:
                transport.client._sock_close()  # noqa: SLF001
            except Exception:  # noqa: BLE001
                pass
        agent.stop()

    def start_device(self, device_id: str) -> None:
        """Bring a stopped device back (same data folder: it resumes where it was)."""
        if device_id not in self.agents:
            self.agents[device_id] = self.make_agent(device_id).start()

    def _spawn(self, fn: Any, name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # traffic -----------------------------------------------------------------------------------
    def _inputs(self, device_id: str, agent: Any, n: int, rng: np.random.Generator) -> Optional[np.ndarray]:
        model = agent.active
        if model is None:
            return None
        shape = [max(d, 1) for d in model.spec.sample_shape]
        if self.rows is not None and int(np.prod(shape)) == self.rows[0].size:
            idx = rng.integers(0, len(self.rows), size=n)
            x = self.rows[idx].reshape([n, *shape]).copy()
        else:
            x = reference_rows(model.manifest, n, rng)
        shift = self.device_knobs.get(device_id, {}).get("input_shift")
        if shift:
            std = self._std.reshape(shape) if self._std is not None and self._std.size == x[0].size else 1.0
            x = x + np.float32(shift) * std
        return x.astype(np.float32)

    def _traffic(self, ids: Sequence[str]) -> None:
        """Predict calls on ``ids``: ``rate`` requests per second per device on average."""
        from device_agent.agent import NotReady, PredictError

        period = 1.0 / self.rate
        rng = np.random.default_rng(abs(hash(tuple(ids))) % 2**32)
        order_rng = random.Random(len(ids))
        order = list(ids)
        next_at = time.monotonic()
        while not self._stop.is_set():
            # a new order every round: the first call after the thread wakes is the slowest, and a
            # fixed order would pin that cost on one device and bias latency gates
            order_rng.shuffle(order)
            for dev in order:
                agent = self.agents.get(dev)
                if agent is None:
                    continue
                x = self._inputs(dev, agent, 1, rng)
                if x is None:
                    continue
                try:
                    agent.predict(x)
                    with self._lock:
                        self.requests += 1
                except (NotReady, PredictError):
                    with self._lock:
                        self.errors += 1
                except Exception as exc:  # noqa: BLE001 - input errors: count, keep going
                    with self._lock:
                        self.errors += 1
                    log.debug("predict on %s failed: %s", dev, exc)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def _flaky(self) -> None:
        rng = random.Random(1)
        while not self._stop.wait(1.0):
            for dev, knobs in self.device_knobs.items():
                per_min = knobs.get("flaky", 0.0)
                agent = self.agents.get(dev)
                if per_min and agent is not None and agent.transport is not None and rng.random() < per_min / 60:
                    try:
                        agent.transport.client._sock_close()  # noqa: SLF001 - a dropped link
                    except Exception:  # noqa: BLE001
                        pass

    # views -------------------------------------------------------------------------------------
    def versions(self) -> dict[str, Optional[str]]:
        """device id -> version it serves (None without a model)."""
        return {dev: (a.active.version if a.active else None) for dev, a in self.agents.items()}

    def status(self) -> dict[str, Any]:
        by: dict[str, int] = {}
        for v in self.versions().values():
            by[v or "-"] = by.get(v or "-", 0) + 1
        return {"devices": len(self.agents), "by_version": by, "requests": self.requests, "errors": self.errors}
