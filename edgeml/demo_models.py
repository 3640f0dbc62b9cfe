"""The demo's models: train the digits CNN twice (v1; v2 retrained with another seed) and convert
both, in a child process.

The child keeps TensorFlow (about 600 MB and its log lines) out of the process that then runs the
fleet: its stdout and stderr go to ``<home>/runs/models.log``, and its progress comes back over a
queue to the parent's reporter, so the person watching sees progress bars, not TensorFlow chatter.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_mod
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgeml import errors as edgeml_errors

if TYPE_CHECKING:
    from edgeml.demo import Reporter

V1, V2 = "1.0.0", "2.0.0"


@dataclass
class Models:
    """The folders of both trained models and both conversions, with the convert reports."""

    v1_train: Path
    v1_convert: Path
    v2_train: Path
    v2_convert: Path
    report_v1: dict[str, Any]
    report_v2: dict[str, Any]


def build_models(home: Path, epochs: int, seed: int, reporter: Any) -> Models:
    """Train and convert v1 (``seed``) and v2 (``seed + 1``) under ``home/runs``, in this process.

    Raises the pipeline's errors (InputDataError, UsageError, ConversionError)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgeml.pipeline.convert import convert
    from edgeml.pipeline.train import train

    runs = home / "runs"
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for version, s in ((V1, seed), (V2, seed + 1)):
            mdir, cdir = runs / f"digits-{version}", runs / f"digits-{version}-convert"
            with reporter.task(f"train the digits CNN for {version} (seed {s}, {epochs} epochs)") as update:

                def say(msg: str, u: Callable[..., None] = update, v: str = version) -> None:
                    u(description=f"train {v}: {msg}")

                summary = train("digits", mdir, seed=s, params={"epochs": epochs}, progress=say)
            acc = summary.get("metrics", {}).get("accuracy")
            rows = summary.get("rows", {}).get("train", "?")
            reporter.info(f"{version}: trained on {rows} digits, test accuracy {acc:.3f}"
                          if isinstance(acc, float) else f"{version}: trained")
            with reporter.task(f"convert {version}: TFLite and ONNX variants, evaluated in LiteRT and onnxruntime",
                               total=1) as update:

                def tick(msg: str, done: int, total: int, u: Callable[..., None] = update, v: str = version) -> None:
                    u(completed=done / max(total, 1), description=f"convert {v}: {msg}")

                report = convert(mdir, cdir, progress=tick)
            chosen = next(v for v in report["variants"] if v["name"] == report["selected"])
            reporter.info(
                f"{version}: selected {chosen['name']} of {len(report['variants'])} variants — "
                f"{chosen['size_bytes'] / 1024:.0f} KiB, accuracy {chosen['accuracy']:.3f} "
                f"(drop {chosen['accuracy_drop'] * 100:.1f} pp), p95 {chosen['latency_p95_ms']:.3f} ms in LiteRT here"
            )
            out[version] = (mdir, cdir, report)
    return Models(out[V1][0], out[V1][1], out[V2][0], out[V2][1], out[V1][2], out[V2][2])


class _QueueReporter:
    """The child's reporter: every call becomes a message for the parent."""

    def __init__(self, q: Any) -> None:
        self.q = q
        self.next_id = 0

    def phase(self, title: str) -> None:
        self.q.put(("phase", title))

    def info(self, text: str) -> None:
        self.q.put(("info", text))

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Callable[..., None]]:
        self.next_id += 1
        tid = self.next_id
        self.q.put(("task_start", tid, description, total))

        def update(completed: Optional[float] = None, description: Optional[str] = None) -> None:
            self.q.put(("task_update", tid, completed, description))

        try:
            yield update
        finally:
            self.q.put(("task_end", tid))


def _child(home: str, epochs: int, seed: int, q: Any, log_path: str) -> None:
    """Child process entry: output to the log, progress and the result on the queue."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        models = build_models(Path(home), epochs, seed, _QueueReporter(q))
        q.put(("done", models))
    except edgeml_errors.EdgemlError as exc:
        q.put(("error", type(exc).__name__, exc.message, exc.hint))
    except BaseException as exc:  # noqa: BLE001 - anything else: tell the parent, with the traceback in the log
        traceback.print_exc()
        q.put(("crash", f"{type(exc).__name__}: {exc}"))


def build_models_in_child(home: Path, epochs: int, seed: int, reporter: Reporter, timeout: float = 900.0) -> Models:
    """Run :func:`build_models` in a child process and relay its progress to ``reporter``.

    Raises the child's edgeml error (same class, message and hint), or EdgemlError when the child
    crashed or took longer than ``timeout``; the child's output is in ``home/runs/models.log``.
    On KeyboardInterrupt the child is terminated first."""
    import time

    runs = home / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    log_path = runs / "models.log"
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(str(home), epochs, seed, q, str(log_path)), name="edgeml-demo-models")
    proc.start()
    tasks: dict[int, tuple[contextlib.ExitStack, Callable[..., None]]] = {}
    deadline = time.monotonic() + timeout
    hint = f"see {log_path}"
    finished = False
    try:
        while True:
            try:
                msg = q.get(timeout=0.5)
            except queue_mod.Empty:
                if not proc.is_alive():
                    raise edgeml_errors.EdgemlError(
                        f"training stopped without a result (exit code {proc.exitcode})", hint=hint
                    ) from None
                if time.monotonic() > deadline:
                    raise edgeml_errors.EdgemlError(f"training took longer than {timeout:.0f}s", hint=hint) from None
                continue
            kind = msg[0]
            if kind == "phase":
                reporter.phase(msg[1])
            elif kind == "info":
                reporter.info(msg[1])
            elif kind == "task_start":
                stack = contextlib.ExitStack()
                update = stack.enter_context(reporter.task(msg[2], total=msg[3]))
                tasks[msg[1]] = (stack, update)
            elif kind == "task_update" and msg[1] in tasks:
                tasks[msg[1]][1](completed=msg[2], description=msg[3])
            elif kind == "task_end" and msg[1] in tasks:
                tasks.pop(msg[1])[0].close()
            elif kind == "done":
                finished = True
                models: Models = msg[1]
                return models
            elif kind == "error":
                cls = getattr(edgeml_errors, msg[1], edgeml_errors.EdgemlError)
                if not (isinstance(cls, type) and issubclass(cls, edgeml_errors.EdgemlError)):
                    cls = edgeml_errors.EdgemlError
                raise cls(msg[2], hint=msg[3] or hint)
            elif kind == "crash":
                raise edgeml_errors.EdgemlError(f"training failed: {msg[1]}", hint=hint)
    finally:
        for stack, _ in tasks.values():
            stack.close()
        if proc.is_alive():
            proc.join(10 if finished else 0.1)
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        q.close()


def reuse_models(source: Path, home: Path, reporter: Any) -> Models:
    """Copy the trained and converted models of an earlier demo (its home or its ``runs`` folder)
    into ``home/runs`` instead of training again. Raises UsageError when a folder is missing."""
    import json
    import shutil

    from edgeml.errors import UsageError

    src = Path(source)
    runs_src = src / "runs" if (src / "runs").is_dir() else src
    names = [f"digits-{V1}", f"digits-{V1}-convert", f"digits-{V2}", f"digits-{V2}-convert"]
    markers = ["train.json", "report.json", "train.json", "report.json"]
    for name, marker in zip(names, markers):
        if not (runs_src / name / marker).is_file():
            raise UsageError(
                f"{runs_src / name} is not a finished model folder of an earlier demo (no {marker})",
                hint="pass the --home of a demo that got past its models, or leave --models-from out",
            )
    runs = home / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (runs / name).exists():
            raise UsageError(f"{runs / name} exists already", hint="use a fresh --home")
        shutil.copytree(runs_src / name, runs / name)
    reports = [json.loads((runs / f"digits-{v}-convert" / "report.json").read_text()) for v in (V1, V2)]
    reporter.info(f"reusing the models of {runs_src}: {', '.join(names)}")
    return Models(runs / names[0], runs / names[1], runs / names[2], runs / names[3], reports[0], reports[1])
