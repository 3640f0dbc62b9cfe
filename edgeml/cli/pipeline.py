"""`edgeml train` and `edgeml convert` (registered on the main group). Thin: parse, call
:mod:`edgeml.pipeline`, render. Progress goes to stderr so ``--json`` output stays clean."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click

from edgeml.cli.options import Context, echo_json, json_option, pass_ctx
from edgeml.errors import UsageError

DATASETS_HELP = "digits, breast_cancer, wine, iris (built in, no download) or a CSV path (with --target)"


@contextmanager
def quiet_frameworks() -> Iterator[None]:
    """Silence TensorFlow/absl/quantizer chatter while the pipeline runs (errors still surface)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    names = ("tensorflow", "absl", "tf2onnx", "root", "onnxruntime", "h5py")
    saved = {n: logging.getLogger(None if n == "root" else n).level for n in names}
    for n in names:
        logging.getLogger(None if n == "root" else n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(None if n == "root" else n).setLevel(level)


@contextmanager
def native_stderr_captured(enabled: bool) -> Iterator[TextIO]:
    """Send file descriptor 2 to a scratch file while the frameworks run (TensorFlow, the TFLite
    converter and LiteRT print C++ log lines there that no setting silences); yield a stream on the
    real stderr for progress and warnings. Disabled (``--debug``): yields ``sys.stderr`` unchanged."""
    if not enabled:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield real
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            real.close()


@contextmanager
def progress_bar(enabled: bool, stream: TextIO | None = None) -> Iterator[Any]:
    """A rich progress bar on ``stream`` (stderr); yields a ``callback(step, done, total)`` (None if disabled)."""
    if not enabled:
        yield None
        return
    out = stream or sys.stderr
    if not out.isatty():  # a log, not a terminal: one plain line per step

        def plain(step: str, done: int, total: int) -> None:
            out.write(f"[{done}/{total}] {step}\n" if total else f"{step}\n")
            out.flush()

        yield plain
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(file=out),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def callback(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        yield callback


@contextmanager
def running(ctx: Context, as_json: bool) -> Iterator[Any]:
    """Quiet frameworks, their native stderr captured (unless --debug), and a progress bar (unless --json)."""
    with quiet_frameworks(), native_stderr_captured(not ctx.debug) as err, progress_bar(not as_json, err) as bar:
        yield bar


def parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    """``("epochs=5", "hidden=[32,16]")`` -> ``{"epochs": 5, "hidden": [32, 16]}`` (JSON values, else strings).

    Raises UsageError for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r} is not KEY=VALUE", hint="e.g. --param epochs=5")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _train_command() -> click.Command:
    @click.command("train")
    @click.option("--dataset", "-d", required=True, help=f"Data: {DATASETS_HELP}.")
    @click.option("--target", default=None, help="Target column of a CSV dataset.")
    @click.option(
        "--recipe",
        "-r",
        default=None,
        help="Model recipe from models/: mlp, cnn, random_forest, logistic. [default: cnn for digits, else mlp]",
    )
    @click.option("--seed", default=0, show_default=True, type=int, help="Seed for the split and training.")
    @click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False),
        default=None,
        help="Output folder. [default: <home>/runs/<dataset>]",
    )
    @click.option(
        "--param", "-p", "params", multiple=True, help="Override a recipe parameter, e.g. -p epochs=5 (repeatable)."
    )
    @json_option
    @pass_ctx
    def train_cmd(
        ctx: Context,
        dataset: str,
        target: str | None,
        recipe: str | None,
        seed: int,
        out: str | None,
        params: tuple[str, ...],
        as_json: bool,
    ) -> None:
        """Train a model on a built-in dataset or a CSV and write a model folder.

        \b
        The data is validated (missing values imputed and counted, categoricals one-hot
        encoded with their vocabulary recorded, constant columns dropped, class imbalance
        warned about) and split train/validation/test (stratified, seeded). Numeric scaling is
        inside the model; the folder holds the model, metrics.json, the drift reference
        profile, golden vectors, lineage and the data splits for `edgeml convert`.

        \b
        Examples:
          edgeml train --dataset digits --out runs/digits
          edgeml train --dataset breast_cancer --recipe random_forest --out runs/bc-rf
          edgeml train --dataset sensors.csv --target label --out runs/sensors
        """
        from edgeml.pipeline.data import dataset_name
        from edgeml.pipeline.train import train

        out_dir = Path(out) if out else ctx.settings.home / "runs" / dataset_name(dataset)
        overrides = parse_params(params)
        with running(ctx, as_json) as bar:
            summary = train(
                dataset,
                out_dir,
                recipe=recipe,
                seed=seed,
                target=target,
                params=overrides,
                progress=(lambda msg: bar(msg, 0, 0)) if bar else None,
            )
        if as_json:
            echo_json(summary)
            return
        for warning in summary["warnings"]:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        m = summary["metrics"]
        rows = summary["rows"]
        auc = f"{m['roc_auc']:.4f}" if m.get("roc_auc") is not None else "n/a"
        click.echo(
            f"trained {summary['recipe']} on {summary['name']}: {rows['train']} train / {rows['val']} val /"
            f" {rows['test']} test rows, {summary['features']} features, {len(summary['labels'])} classes"
        )
        click.echo(f"test accuracy {m['accuracy']:.4f}  macro-F1 {m['f1_macro']:.4f}  ROC AUC {auc}")
        if summary["fit"].get("best_params"):
            click.echo(f"grid search best: {summary['fit']['best_params']} (cv {summary['fit']['cv_score']:.4f})")
        click.echo(f"wrote {out_dir}")
        click.echo(f"next: edgeml convert {out_dir}")

    return train_cmd


def _convert_command() -> click.Command:
    @click.command("convert")
    @click.argument("model_dir", type=click.Path())
    @click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False),
        default=None,
        help="Output folder. [default: MODEL_DIR-convert]",
    )
    @click.option(
        "--max-accuracy-drop",
        default=0.01,
        show_default=True,
        type=float,
        help="Largest accepted accuracy loss against the trained model, as a fraction (0.01 = 1 pp).",
    )
    @click.option(
        "--prefer",
        type=click.Choice(["size", "latency"]),
        default="size",
        show_default=True,
        help="Among variants within the accuracy budget: the smallest file, or the lowest measured p50.",
    )
    @click.option("--int8-io", is_flag=True, help="Also build a full-integer TFLite variant with int8 input/output.")
    @click.option("--threads", default=1, show_default=True, type=int, help="Runtime threads for the latency runs.")
    @click.option(
        "--latency-runs",
        default=200,
        show_default=True,
        type=int,
        help="Timed batch-1 runs per variant (after 20 warm-up).",
    )
    @json_option
    @pass_ctx
    def convert_cmd(
        ctx: Context,
        model_dir: str,
        out: str | None,
        max_accuracy_drop: float,
        prefer: str,
        int8_io: bool,
        threads: int,
        latency_runs: int,
        as_json: bool,
    ) -> None:
        """Compress a trained model to TFLite and ONNX variants, prove each in its runtime, pick one.

        \b
        Variants: TFLite fp32, dynamic-range, fp16, full-integer int8 (float I/O; --int8-io adds
        int8 I/O); ONNX fp32, int8 dynamic, int8 static QDQ. scikit-learn models get the ONNX
        variants that apply. Each is evaluated in LiteRT or onnxruntime (never TensorFlow):
        accuracy and its drop, agreement with the trained model, max output difference, size,
        load time, p50/p95 latency at batch 1 on one thread after warm-up, on the CPU named in
        the report. Writes report.json/.md/.html and variants/<name>.{tflite,onnx,manifest.json}.

        \b
        Example:
          edgeml convert runs/digits --out runs/digits-c --prefer latency
        """
        from edgeml.pipeline.convert import convert
        from edgeml.pipeline.report import render_variant_table

        if threads < 1 or latency_runs < 1:
            raise UsageError("--threads and --latency-runs must be at least 1")
        src = Path(model_dir)
        out_dir = Path(out) if out else src.parent / f"{src.name}-convert"
        with running(ctx, as_json) as bar:
            report = convert(
                src,
                out_dir,
                max_accuracy_drop=max_accuracy_drop,
                prefer=prefer,
                progress=bar,
                int8_io=int8_io,
                threads=threads,
                latency_runs=latency_runs,
            )
        if as_json:
            echo_json(report)
            return
        click.echo(render_variant_table(report))
        click.echo(f"wrote {out_dir}/report.json, report.md, report.html and variants/")

    return convert_cmd


def register(main: click.Group) -> None:
    """Add ``train`` and ``convert`` to ``main``."""
    main.add_command(_train_command())
    main.add_command(_convert_command())
