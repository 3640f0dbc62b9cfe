"""The controller's HTTP API: routes, errors as JSON with a status, POST for rollouts."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgeml.fleet.controller import Controller
from edgeml.fleet.server import STATIC_DIR
from edgeml.settings import load_settings


def call(url: str, body: Any = None, method: str = "GET") -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            return r.status, json.loads(raw) if r.headers.get_content_type() == "application/json" else raw
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def ctl(tmp_path: Path, shared_broker: Any) -> Any:
    settings = load_settings(tmp_path / "home", env={}, broker=shared_broker.url, fleet="http")
    c = Controller(settings, http_port=0, tick_interval=0.2, refresh_timestamp=False).start()
    yield c
    c.stop()


def test_routes_and_errors(ctl: Controller) -> None:
    base = ctl.url
    assert call(f"{base}/api/fleet") == (200, {"devices": []})
    assert call(f"{base}/api/rollouts") == (200, {"rollouts": []})
    assert call(f"{base}/api/series?since=abc")[0] == 200  # a bad number falls back to the default
    assert call(f"{base}/api/events?limit=5") == (200, {"events": []})
    status, body = call(f"{base}/api/nope")
    assert status == 404 and "no route" in body["error"]
    status, body = call(f"{base}/api/rollouts/nope")
    assert status == 404 and "no rollout" in body["error"] and body["hint"]
    status, body = call(f"{base}/static/../../settings.py")
    assert status == 404
    status, page = call(f"{base}/")
    assert status == 200 and page == (STATIC_DIR / "index.html").read_bytes()


def test_post_rollouts_and_commands(ctl: Controller) -> None:
    base = ctl.url
    status, body = call(f"{base}/api/rollouts", b"[1]", "POST")
    assert status == 400 and "JSON object" in body["error"]
    status, body = call(f"{base}/api/rollouts", {"model": "digits"}, "POST")
    assert status == 400 and "required" in body["error"]
    status, body = call(f"{base}/api/rollouts", {"model": "digits", "version": "2.0.0", "stages": "5"}, "POST")
    assert status == 400 and "end at 100" in body["error"] and body["hint"]
    status, body = call(f"{base}/api/rollouts", {"model": "digits", "version": "2.0.0", "wat": 1}, "POST")
    assert status == 400 and "wat" in body["error"]
    status, body = call(f"{base}/api/rollouts", {"model": "digits", "version": "2.0.0", "stages": "50,100"}, "POST")
    assert status == 201 and body["state"] == "running" and body["stages"] == [50, 100]
    status, body = call(f"{base}/api/rollouts/digits/pause", {}, "POST")
    assert status == 202 and body["state"] == "paused"
    status, body = call(f"{base}/api/rollouts/digits/pause", {}, "POST")
    assert status == 400 and "only a running rollout" in body["error"]
    status, body = call(f"{base}/api/rollouts/digits/abort", {}, "POST")
    assert status == 202 and body["state"] == "aborted"
