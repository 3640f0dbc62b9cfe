"""Fixtures for the agent tests: tiny real TFLite models (built once, cached) and configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agent.modelkit import build_models


@pytest.fixture(scope="session")
def tiny_models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> model file: good1, good2, good3 (3-class softmax on 4 features), nan_when_negative,
    big (~1 MB), logreg (ONNX). Cached in pytest's cache folder when the cache plugin is on."""
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("edgeml-agent-models") if cache is not None else tmp_path_factory.mktemp("agent-models")
    return build_models(Path(folder))


def agent_config(tmp_path: Path, broker_url: str, **kw: Any) -> Any:
    from device_agent.agent import AgentConfig

    base: dict[str, Any] = {
        "device_id": "dev-t1",
        "fleet": "test",
        "broker": broker_url,
        "data_dir": tmp_path / "agent",
        "http_address": None,
        "telemetry_interval": 0.3,
        "probation_seconds": 1.0,
        "probation_requests": 1000,
        "update_check_interval": 5.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
    }
    base.update(kw)
    return AgentConfig(**base)
