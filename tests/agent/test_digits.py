"""The real pipeline's digits CNN (``digits_convert_dir``), published with ``edgeml.release``,
pulled, verified and served by the agent; its drift features match the host's profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.agent import Agent
from tests.agent.conftest import agent_config
from tests.agent.harness import Watcher


@pytest.mark.slow
def test_digits_release_is_served_with_drift_telemetry(
    tmp_path: Path, broker: Any, digits_convert_dir: Path, digits_model_dir: Path
) -> None:
    from edgeml.release.keys import init_keys
    from edgeml.release.publish import publish
    from edgeml.settings import load_settings

    settings = load_settings(tmp_path / "host", env={}, broker=broker.url, fleet="test")
    init_keys(settings)
    result = publish(settings, digits_convert_dir, name="digits", version="1.0.0")
    watcher = Watcher(broker.host, broker.port)
    cfg = agent_config(
        tmp_path,
        broker.url,
        model="digits",
        trusted_root=settings.repo_dir / "metadata" / "root.json",
        telemetry_interval=0.5,
        probation_requests=20,
    )
    agent = Agent(cfg).start()
    try:
        watcher.wait_for(lambda: agent.status()["version"] == "1.0.0", timeout=30, what="digits 1.0.0 active")
        data = np.load(digits_model_dir / "data.npz")
        x, y = data["x_test"].astype(np.float32), data["y_test"]
        pred = agent.predict(x[:64])
        labels = agent.active.labels if agent.active else []
        want = [labels[int(i)] if labels else str(int(i)) for i in y[:64]]
        accuracy = np.mean([a == b for a, b in zip(pred.labels, want)])
        assert accuracy >= 0.8, (accuracy, result["variant"])
        for row in x[64:128]:
            agent.predict(row)
        watcher.wait_for(lambda: agent.status()["update_state"] == "committed", timeout=10, what="committed")
        tel = watcher.wait_for(
            lambda: [t for t in watcher.of("telemetry") if t.summary.requests and t.psi], timeout=10, what="psi"
        )
        t = tel[0]
        ref = agent.active.manifest.reference if agent.active else None
        assert ref is not None and ref.feature_kind == "pooled"
        assert len(t.psi) == len(ref.features) and all(h.count > 0 for h in t.summary.features)
        assert not t.drift, t.psi  # test data looks like the training data
        # a shifted input (inverted images) moves the pooled statistics: drift
        for row in x[:128]:
            agent.predict(16.0 - row)
        shifted = watcher.wait_for(lambda: [t for t in watcher.of("telemetry") if t.drift], timeout=10, what="drift")
        assert max(p for p in shifted[-1].psi if p is not None) > cfg.drift_psi_threshold
    finally:
        agent.stop()
        watcher.close()
