"""CLI behaviour on bad input: a clear message and hint, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeml.cli import main

EDGEML = [sys.executable, "-m", "edgeml"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEML, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["train", "--dataset", "nowhere.csv", "--target", "y"], "does not exist"),
        (["train", "--dataset", "digits", "--recipe", "xgboost"], "unknown recipe 'xgboost'"),
        (["train", "--dataset", "iris", "--recipe", "cnn"], "needs image input"),
        (["train", "--dataset", "iris", "-p", "epochs"], "is not KEY=VALUE"),
        (["train", "--dataset", "iris", "-p", "layers=3"], "has no parameter 'layers'"),
    ],
)
def test_train_bad_input_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    proc = run(*args, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_train_wrong_target_lists_columns(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    proc = run("train", "--dataset", str(csv), "--target", "lable", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "target column 'lable' is not in d.csv" in proc.stderr and "a, b, label" in proc.stderr


def test_convert_refuses_a_folder_not_made_by_train(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("hi")
    proc = run("convert", str(tmp_path / "m"), "--out", str(tmp_path / "c"))
    assert proc.returncode == 2 and "not a folder produced by `edgeml train`" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_convert_failure_leaves_nothing_and_foreign_out_is_refused(tmp_path: Path, digits_model_dir: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(digits_model_dir, broken)
    (broken / "model.keras").write_bytes(b"not a keras file")
    proc = run("convert", str(broken), "--out", str(tmp_path / "c"))
    assert proc.returncode == 2 and "cannot load" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # no output, no temp folder

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"jpg")
    proc = run("convert", str(digits_model_dir), "--out", str(foreign), "--latency-runs", "5")
    assert proc.returncode == 2 and "is not empty" in proc.stderr
    assert [p.name for p in foreign.iterdir()] == ["cat.jpg"]


def test_bad_options_are_rejected_before_work(tmp_path: Path) -> None:
    proc = run("convert", str(tmp_path), "--prefer", "speed")
    assert proc.returncode == 2 and "speed" in proc.stderr
    (tmp_path / "m").mkdir()
    proc = run("convert", str(tmp_path / "m"), "--max-accuracy-drop", "5")
    assert proc.returncode == 2 and "max-accuracy-drop" in proc.stderr


def test_help_explains_the_commands() -> None:
    runner = CliRunner()
    train_help = runner.invoke(main, ["train", "--help"]).output
    assert "--dataset" in train_help and "breast_cancer" in train_help and "--recipe" in train_help
    convert_help = runner.invoke(main, ["convert", "--help"]).output
    for option in ("--max-accuracy-drop", "--prefer", "--int8-io", "--json"):
        assert option in convert_help
    assert "never TensorFlow" in convert_help


@pytest.mark.slow
def test_train_and_convert_print_readable_tables(tmp_path: Path) -> None:
    m, c = tmp_path / "wine", tmp_path / "wine-c"
    proc = run("train", "--dataset", "wine", "--recipe", "logistic", "--out", str(m))
    assert proc.returncode == 0, proc.stderr
    assert "trained logistic on wine" in proc.stdout and "grid search best" in proc.stdout
    proc = run("convert", str(m), "--out", str(c), "--latency-runs", "20")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:3] == ["variant", "size", "accuracy"]
    assert any(line.startswith("* onnx-fp32") for line in lines)
    assert "selected: onnx-fp32" in proc.stdout and "skipped onnx-int8-qdq" in proc.stdout
    assert "[1/" in proc.stderr  # progress, one line per step when not on a terminal
    assert "I0000" not in proc.stderr and "Traceback" not in proc.stderr
    assert (c / "report.md").is_file() and (c / "report.html").is_file()
