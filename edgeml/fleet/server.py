"""The controller's HTTP server on 127.0.0.1: the dashboard page, the JSON API (docs/INTERFACES.md §4)
and Prometheus ``/metrics``. Standard library only; ``TCP_NODELAY`` on every connection so that
keep-alive responses are not held back by delayed ACKs."""

from __future__ import annotations

import json
import logging
import mimetypes
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from device_agent.errors import AgentError

if TYPE_CHECKING:
    from edgeml.fleet.controller import Controller

log = logging.getLogger("edgeml.fleet.http")

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024


def _int_arg(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(float(query.get(name, [default])[0]))))
    except (TypeError, ValueError):
        return default


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgeml-fleet"
    protocol_version = "HTTP/1.1"
    controller: Controller

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s " + format, self.address_string(), *args)

    # responses ---------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value, default=str, allow_nan=False).encode(), "application/json")

    def _error(self, status: int, message: str, hint: str = "") -> None:
        self._json({"error": message, "hint": hint}, status)

    def _static(self, rel: str) -> None:
        root = STATIC_DIR.resolve()
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            self._error(404, f"no such file: /static/{rel}" if rel != "index.html" else "dashboard page not found")
            return
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        self._send(200, path.read_bytes(), ctype)

    # routes ------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        q = parse_qs(url.query)
        c = self.controller
        try:
            if url.path in ("/", "/index.html"):
                self._static("index.html")
            elif url.path.startswith("/static/"):
                self._static(url.path[len("/static/"):])
            elif url.path == "/api/fleet":
                self._json({"devices": c.fleet()})
            elif url.path == "/api/rollouts":
                self._json({"rollouts": c.rollouts()})
            elif url.path.startswith("/api/rollouts/"):
                self._json(c.rollout_status(url.path[len("/api/rollouts/"):]))
            elif url.path == "/api/series":
                self._json({"series": c.series(_int_arg(q, "since", 600, 10, 7 * 86400))})
            elif url.path == "/api/events":
                self._json({"events": c.events(_int_arg(q, "limit", 100, 1, 5000))})
            elif url.path == "/api/alerts":
                self._json({"alerts": c.store.alerts(_int_arg(q, "limit", 100, 1, 5000))})
            elif url.path == "/api/health":
                self._json({"ok": True, "collector": c.collector.stats.to_dict() if c.collector else None})
            elif url.path == "/metrics":
                self._send(200, c.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._error(404, f"no route {url.path}", "see docs/INTERFACES.md §4 for the API")
        except AgentError as exc:
            self._error(400 if "no rollout" not in exc.message else 404, exc.message, exc.hint)
        except Exception as exc:  # noqa: BLE001 - never drop the connection without an answer
            log.exception("GET %s failed", url.path)
            self._error(500, f"{type(exc).__name__}: {exc}")

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._error(413, f"body of {length} bytes is over {MAX_BODY}")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            self._error(400, f"body is not a JSON object: {exc}")
            return
        parts = [p for p in url.path.split("/") if p]
        c = self.controller
        try:
            if parts == ["api", "rollouts"]:
                model, version = body.pop("model", None), body.pop("version", None)
                if not model or not version:
                    self._error(400, "model and version are required")
                    return
                self._json(c.start_rollout(str(model), str(version), **body), 201)
            elif len(parts) == 4 and parts[:2] == ["api", "rollouts"]:
                self._json(c.command(parts[2], parts[3]), 202)
            else:
                self._error(404, f"no route POST {url.path}")
        except AgentError as exc:
            self._error(400, exc.message, exc.hint)
        except TypeError as exc:
            self._error(400, f"bad rollout options: {exc}")


class FleetHTTPServer:
    """Serve ``controller`` on ``host:port`` (port 0 picks a free one) in a background thread."""

    def __init__(self, controller: Controller, host: str = "127.0.0.1", port: int = 8765) -> None:
        handler = type("Handler", (_Handler,), {"controller": controller})
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fleet-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)
