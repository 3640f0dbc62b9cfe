"""Settings precedence: flags > environment > edgeml.toml > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.errors import UsageError
from edgeml.settings import DEFAULT_BROKER, load_settings


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(tmp_path, env={})
    assert s.broker == DEFAULT_BROKER and s.fleet == "default"
    assert s.store_url.startswith("sqlite:///") and s.store_url.endswith("fleet.db")


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "edgeml.toml").write_text('broker = "mqtt://file:1"\nfleet = "f-file"\n[rollout]\nsoak = "5m"\n')
    s = load_settings(tmp_path, env={})
    assert (s.broker, s.fleet, s.section("rollout")["soak"]) == ("mqtt://file:1", "f-file", "5m")
    s = load_settings(tmp_path, env={"EDGEML_BROKER": "mqtt://env:2"})
    assert s.broker == "mqtt://env:2" and s.fleet == "f-file"
    s = load_settings(tmp_path, env={"EDGEML_BROKER": "mqtt://env:2"}, broker="mqtt://flag:3")
    assert s.broker == "mqtt://flag:3"
    assert load_settings(env={"EDGEML_HOME": str(tmp_path)}).fleet == "f-file"


def test_bad_config_file_and_broker(tmp_path: Path) -> None:
    (tmp_path / "edgeml.toml").write_text("broker = [")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_settings(tmp_path, env={})
    (tmp_path / "edgeml.toml").write_text("fleet = 3\n[store]\n")
    with pytest.raises(Exception, match="scheme"):
        load_settings(tmp_path, env={}, broker="http://x")
