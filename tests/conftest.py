"""Shared fixtures: a real Mosquitto per test (``broker``) or per session (``shared_broker``),
and a real PostgreSQL URL (``pg_url``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import MosquittoBroker

PG_URL_DEFAULT = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto on a free port that the test may stop, start and restart."""
    b = MosquittoBroker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One Mosquitto for tests that do not stop it (use ``broker`` to inject outages)."""
    b = MosquittoBroker(tmp_path_factory.mktemp("shared-mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A reachable PostgreSQL URL (EDGEML_TEST_PG_URL, default postgres:postgres@127.0.0.1/test).

    Skips with the reason when no server answers — except in CI (CI=true), where .ci/run starts
    one, so an unreachable server is a failure there.
    """
    url = os.environ.get("EDGEML_TEST_PG_URL", PG_URL_DEFAULT)
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        msg = f"PostgreSQL not reachable at {url} ({type(exc).__name__}: {exc}); run `bash .ci/system-deps.sh postgres`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return url


@pytest.fixture(scope="session")
def digits_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained digits CNN folder (``edgeml train --dataset digits``, few epochs), built once per session."""
    from edgeml.pipeline.train import train

    out = tmp_path_factory.mktemp("digits-model") / "model"
    train("digits", out, recipe="cnn", seed=0, params={"epochs": 4, "patience": 0})
    return out


@pytest.fixture(scope="session")
def digits_convert_dir(digits_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``edgeml convert`` output of :func:`digits_model_dir`: report.json, variants/*.tflite|onnx
    and variants/*.manifest.json (docs/INTERFACES.md §1), built once per session."""
    from edgeml.pipeline.convert import convert

    out = tmp_path_factory.mktemp("digits-convert") / "convert"
    convert(digits_model_dir, out, latency_runs=50)
    return out
