"""Alert rules on merged telemetry (store on SQLite and PostgreSQL), their actions, and the
controller keeping the repository timestamp fresh."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgeml.errors import UsageError
from edgeml.fleet.alerts import DEFAULT_RULES, AlertEvaluator, AlertRule, load_rules, mean_confidence
from edgeml.fleet.collector import telemetry_row
from edgeml.fleet.store import Store
from tests.fleet.helpers import telemetry


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_rules_from_config_and_their_errors() -> None:
    assert load_rules({}) == list(DEFAULT_RULES)
    rules = load_rules({"alerts": [{"name": "slow", "metric": "p95_ms", "op": ">", "threshold": 5, "window": "1m",
                                    "actions": ["log", "auto_rollback"]}]})
    assert rules[0].window_s == 60 and rules[0].actions == ("log", "auto_rollback")
    for bad in ({"name": "x", "metric": "nope", "threshold": 1}, {"name": "x", "metric": "psi"},
                {"name": "x", "metric": "psi", "threshold": 1, "actions": ["webhook"]},
                {"name": "x", "metric": "psi", "threshold": 1, "actions": ["email"]}):
        with pytest.raises(UsageError):
            AlertRule.from_config(bad)
    with pytest.raises(UsageError):
        load_rules({"alerts": {"name": "x"}})
    assert mean_confidence([0, 0, 10], [0.5, 0.9]) == pytest.approx(0.95)


def test_error_rate_alert_fires_once_with_every_action(store: Store) -> None:
    Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    now = time.time()
    rows = [telemetry_row(f"d{i}", telemetry(f"d{i}", 1, "2.0.0", errors=10, end=now).to_json(), now)
            for i in range(3)]
    rows += [telemetry_row(f"e{i}", telemetry(f"e{i}", 1, "1.0.0", end=now).to_json(), now) for i in range(3)]
    store.write_batch(telemetry=rows)
    halted: list[tuple[str, str, str]] = []
    rule = AlertRule("error_rate", "error_rate", ">", 0.05, window_s=60, min_requests=100,
                     actions=("log", "webhook", "auto_rollback"),
                     webhook=f"http://127.0.0.1:{server.server_address[1]}/hook")
    ev = AlertEvaluator(store, [rule], halt=lambda m, v, r: halted.append((m, v, r)))
    try:
        fired = ev.evaluate(now)
        assert [(a["model"], a["version"]) for a in fired] == [("digits", "2.0.0")]
        assert fired[0]["value"] == pytest.approx(0.1)
        assert ev.evaluate(now) == []  # still firing: not again
        assert halted and halted[0][:2] == ("digits", "2.0.0") and "error_rate" in halted[0][2]
        deadline = time.time() + 5
        while not Hook.received and time.time() < deadline:
            time.sleep(0.05)
        assert Hook.received and Hook.received[0]["rule"] == "error_rate"
        assert store.alerts()[0]["actions"] == "log,webhook,auto_rollback"
        # outside the window nothing holds any more: the alert clears and may fire again later
        assert ev.evaluate(now + 600) == [] and not ev.firing
    finally:
        server.shutdown()


def test_timestamp_is_resigned_before_it_expires(tmp_path: Path, shared_broker: Any) -> None:
    from edgeml.fleet.controller import refresh_timestamp_if_due
    from edgeml.release.keys import init_keys
    from edgeml.release.repo import Repository
    from edgeml.settings import load_settings

    settings = load_settings(tmp_path / "home", env={}, broker=shared_broker.url, fleet="tsfresh")
    assert refresh_timestamp_if_due(settings, shared_broker.url) is False  # no repository here
    init_keys(settings)
    before = Repository(settings).status()["timestamp"]["version"]
    assert refresh_timestamp_if_due(settings, shared_broker.url) is False  # fresh: nothing to do
    expires = datetime.fromisoformat(Repository(settings).status()["timestamp"]["expires"].replace("Z", "+00:00"))
    soon = expires - timedelta(minutes=1)
    assert refresh_timestamp_if_due(settings, shared_broker.url, now=soon.astimezone(timezone.utc)) is True
    assert Repository(settings).status()["timestamp"]["version"] == before + 1
    # with a repository here, only published versions can be rolled out
    from edgeml.fleet.controller import check_published

    with pytest.raises(UsageError) as info:
        check_published(settings, "digits", "9.9.9")
    assert "not published" in info.value.message and "releases ls digits" in info.value.hint
