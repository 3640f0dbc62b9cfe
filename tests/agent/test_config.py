"""agent.toml loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.agent.config import AgentConfig, load_config
from device_agent.errors import ConfigError


def test_load_config_reads_agent_table_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(
        '[agent]\ndevice_id = "dev-7"\nfleet = "plant-a"\nbroker = "mqtt://u:p@broker:1884"\n'
        'data_dir = "data"\nhttp_address = "0.0.0.0:9000"\ntelemetry_interval = 2.5\nmodel = "digits"\n'
        'trusted_root = "root.json"\nprobation_requests = 10\n'
    )
    cfg = load_config(tmp_path / "agent.toml")
    assert cfg.device_id == "dev-7" and cfg.fleet == "plant-a" and cfg.model == "digits"
    assert cfg.data_dir == tmp_path / "data" and cfg.trusted_root == tmp_path / "root.json"
    assert cfg.http_host_port == ("0.0.0.0", 9000)
    assert (cfg.broker_url.host, cfg.broker_url.port, cfg.broker_url.username) == ("broker", 1884, "u")
    assert cfg.telemetry_interval == 2.5 and cfg.probation_requests == 10


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ('device_id = "a/b"', "device_id"),
        ('broker = "http://x"', "scheme"),
        ("telemetry_interval = 0", "telemetry_interval"),
        ('http_address = "nope"', "HOST:PORT"),
        ('runtime = "tensorrt"', "runtime"),
        ("spool_max_windows = -1", "spool_max_windows"),
        ('colour = "blue"', "unknown setting"),
        ('bootstrap_model = "m.tflite"', "go together"),
        ("probation_max_error_rate = 2.0", "between 0 and 1"),
        ("telemetry_interval = 'fast'", "telemetry_interval"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path: Path, toml: str, match: str) -> None:
    (tmp_path / "agent.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError, match=match) as info:
        load_config(tmp_path / "agent.toml")
    assert info.value.message


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("device_id = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_http_can_be_disabled_and_constructor_validates(tmp_path: Path) -> None:
    cfg = AgentConfig(data_dir=tmp_path, http_address=None)
    assert cfg.http_host_port is None
    with pytest.raises(ConfigError):
        AgentConfig(data_dir=tmp_path, threads=0)
