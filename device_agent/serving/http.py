"""The local HTTP API on the stdlib ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, TCP_NODELAY).

- ``POST /v1/predict`` — JSON ``{"inputs": sample or [samples]}`` or raw float32 bytes
  (``Content-Type: application/octet-stream``); 400/413 with a message for bad input.
- ``GET /v1/health`` — 200 when a verified model serves, else 503.
- ``GET /v1/model`` — the active model's manifest summary.
- ``GET /metrics`` — Prometheus text.

Each response is written in one ``write`` (headers and body together).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Optional

from device_agent.errors import AgentError
from device_agent.serving.inputs import InputError, parse_json_body, parse_raw_body
from device_agent.serving.metrics import render_metrics

if TYPE_CHECKING:
    from device_agent.agent.core import Agent

log = logging.getLogger("edgeml.agent.http")

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
            413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
            500: "Internal Server Error", 503: "Service Unavailable"}


MAX_HEADER_LINE = 65536
MAX_HEADERS = 100


class Headers(dict):  # type: ignore[type-arg]
    """Request headers by lower-case name (what the handlers read; no email parsing)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> Any:
        return dict.get(self, name.lower())


class AgentHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], agent: Agent) -> None:
        self.agent = agent
        super().__init__(address, PredictHandler)


class PredictHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AgentHTTPServer
    timeout = 60

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def parse_request(self) -> bool:
        """A lean replacement for the stdlib's email-based header parsing (the largest cost of a
        small request). Same limits and keep-alive rules; malformed requests get 400/431/505."""
        self.command = None  # type: ignore[assignment]
        self.request_version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")  # type: ignore[attr-defined]
        self.requestline = requestline
        words = requestline.split()
        self.request_version = "HTTP/1.0"  # errors below are answered with a status line
        if len(words) != 3:
            self.send_error(400, f"Bad request syntax ({requestline[:100]!r})")
            return False
        command, path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(505, f"Unsupported HTTP version ({version[:20]!r})")
            return False
        self.command, self.path, self.request_version = command, path, version
        headers = Headers()
        for count in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.send_error(431, "Header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            if count == MAX_HEADERS:
                self.send_error(431, f"More than {MAX_HEADERS} headers")
                return False
            name, sep, value = line.decode("iso-8859-1").partition(":")
            key = name.strip().lower()
            if not sep or not key or " " in key:
                self.send_error(400, "Bad header line")
                return False
            value = value.strip()
            if key == "content-length" and key in headers and dict.get(headers, key) != value:
                self.send_error(400, "Conflicting Content-Length headers")
                return False
            headers[key] = value
        self.headers = headers  # type: ignore[assignment]
        conn = str(headers.get("connection", "")).lower()
        if conn == "close":
            self.close_connection = True
        elif conn == "keep-alive" or version == "HTTP/1.1":
            self.close_connection = False
        if str(headers.get("expect", "")).lower() == "100-continue" and version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
            + "\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc, separators=(",", ":")).encode())

    def _error(self, status: int, message: str, hint: str = "") -> None:
        doc = {"error": message}
        if hint:
            doc["hint"] = hint
        self._json(status, doc)

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        agent = self.server.agent
        path = self.path.split("?", 1)[0]
        if path == "/v1/health":
            st = agent.status()
            ok = agent.active is not None
            self._json(200 if ok else 503, {"status": "ok" if ok else "no_model", **{
                k: st[k] for k in ("model", "version", "update_state", "connected")}})
        elif path == "/v1/model":
            m = agent.active
            if m is None:
                self._error(503, "no verified model is active yet")
                return
            man = m.manifest
            self._json(200, {
                "name": m.name, "version": m.version, "format": man.format, "quantization": man.quantization,
                "task": man.task, "inputs": [t.to_dict() for t in man.inputs],
                "outputs": [t.to_dict() for t in man.outputs], "labels": man.labels,
                "latency_budget_ms": man.latency_budget_ms, "runtime": m.runtime.name,
                "sha256": m.slot.sha256, "previous": agent.status()["previous"],
                "update_state": agent.record.state,
            })
        elif path == "/metrics":
            self._send(200, render_metrics(agent).encode(), "text/plain; version=0.0.4")
        elif path == "/v1/predict":
            self._error(405, "use POST for /v1/predict")
        else:
            self._error(404, f"no such endpoint {path}", "endpoints: /v1/predict, /v1/health, /v1/model, /metrics")

    def do_POST(self) -> None:  # noqa: N802
        agent = self.server.agent
        if self.path.split("?", 1)[0] != "/v1/predict":
            self._drain_or_close()
            self._error(404, f"no such endpoint {self.path}", "POST /v1/predict")
            return
        length = content_length(self.headers.get("Content-Length"))
        if length is None:
            self.close_connection = True
            self._error(411, "Content-Length is required (a decimal number of bytes)",
                        "send the body with a Content-Length header")
            return
        if length > agent.cfg.max_body_bytes:
            self.close_connection = True
            agent.window.record_rejected()
            self._error(413, f"body of {length} bytes exceeds the limit of {agent.cfg.max_body_bytes}",
                        "send a smaller batch")
            return
        body = self.rfile.read(length) if length else b""
        model = agent.active
        if model is None:
            self._error(503, "no verified model is active yet", "wait for an update")
            return
        ctype = (self.headers.get("Content-Type") or "application/json").split(";", 1)[0].strip().lower()
        try:
            if ctype == "application/octet-stream":
                batch, single = parse_raw_body(body, model.spec, agent.cfg.max_batch)
            elif ctype in ("application/json", "text/json", ""):
                batch, single = parse_json_body(body, model.spec, agent.cfg.max_batch)
            else:
                raise InputError(f"Content-Type {ctype!r} is not supported",
                                 hint="use application/json or application/octet-stream", status=415)
        except InputError as exc:
            agent.window.record_rejected()
            self._error(exc.status, exc.message, exc.hint)
            return
        try:
            pred = agent._run(model, batch, single)
        except AgentError as exc:
            nonfinite = "NaN" in exc.message or "infinite" in exc.message
            self._error(422 if nonfinite else 500, exc.message, exc.hint)
            return
        self._json(200, pred.to_dict())

    def _drain_or_close(self) -> None:
        n = content_length(self.headers.get("Content-Length"))
        if n is not None and n <= 1 << 20:
            self.rfile.read(n)
        else:
            self.close_connection = True


def content_length(value: Optional[str]) -> Optional[int]:
    """The byte count of a Content-Length header, or None when it is missing or not plain ASCII
    digits of a sane length (``int()`` accepts other Unicode digits and refuses huge numbers)."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 18 or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def start_http(agent: Agent, host: str, port: int) -> AgentHTTPServer:
    """Bind and serve in a daemon thread. Raises ConfigError when the address is unusable."""
    from device_agent.errors import ConfigError

    try:
        server = AgentHTTPServer((host, port), agent)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}",
                          hint="pick another http_address (port 0 = any free port)") from exc
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                         name=f"http-{agent.cfg.device_id}", daemon=True)
    t.start()
    return server
