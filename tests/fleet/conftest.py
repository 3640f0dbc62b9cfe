"""Fleet fixtures: a store on SQLite and on PostgreSQL (same tests), and telemetry builders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeml.fleet.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The fleet store on SQLite (a file) and on a real PostgreSQL (tables with a unique prefix,
    dropped afterwards so reruns start clean)."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
    else:
        pg_url = request.getfixturevalue("pg_url")
        s = Store(pg_url, prefix=f"t{uuid.uuid4().hex[:8]}_")
    yield s
    if request.param == "postgresql":
        s.drop_all()
    s.close()
