"""The HTTP API on a real agent (factory model, real LiteRT, real broker), fuzzed with hypothesis."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.agent import Agent
from tests.agent.conftest import agent_config
from tests.agent.modelkit import make_manifest, write_manifest


@pytest.fixture(scope="module")
def served(
    tiny_models: dict[str, Path], shared_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("http-agent")
    manifest = write_manifest(tiny_models["good1"], make_manifest(tiny_models["good1"], version="1.0.0"))
    cfg = agent_config(
        tmp,
        shared_broker.url,
        device_id="dev-http",
        http_address="127.0.0.1:0",
        bootstrap_model=tiny_models["good1"],
        bootstrap_manifest=manifest,
        max_batch=16,
        max_body_bytes=64 * 1024,
        telemetry_interval=5.0,
    )
    agent = Agent(cfg).start()
    yield agent
    agent.stop()


def request(
    agent: Agent,
    method: str,
    path: str,
    body: bytes | None = None,
    ctype: str = "application/json",
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, Any]:
    c = conn or http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
    try:
        headers = {"Content-Type": ctype} if body is not None else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        raw = r.read()
        ct = r.getheader("Content-Type") or ""
        return r.status, (json.loads(raw) if "json" in ct else raw.decode())
    finally:
        if conn is None:
            c.close()


def test_predict_single_batch_and_raw_match_the_in_process_api(served: Agent) -> None:
    x = np.array([[0.2, 0.4, 0.6, 0.8], [0.9, 0.1, 0.3, 0.5]], dtype=np.float32)
    want = served.predict(x)
    status, doc = request(served, "POST", "/v1/predict", json.dumps({"inputs": x[0].tolist()}).encode())
    assert status == 200 and doc["label"] == want.labels[0] and doc["version"] == "1.0.0"
    assert np.allclose(doc["output"], want.outputs[0], atol=1e-6)
    status, doc = request(served, "POST", "/v1/predict", json.dumps({"inputs": x.tolist()}).encode())
    assert status == 200 and doc["labels"] == want.labels and len(doc["confidence"]) == 2
    status, doc = request(served, "POST", "/v1/predict", x.astype("<f4").tobytes(), "application/octet-stream")
    assert status == 200 and np.allclose(doc["outputs"], want.outputs, atol=1e-6)


def test_keep_alive_connection_serves_many_requests(served: Agent) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=10)
    body = json.dumps({"inputs": [0.1, 0.2, 0.3, 0.4]}).encode()
    for _ in range(20):
        status, _ = request(served, "POST", "/v1/predict", body, conn=conn)
        assert status == 200
    status, _ = request(served, "POST", "/v1/predict", b"{bad", conn=conn)  # a 400 keeps the connection
    assert status == 400
    status, _ = request(served, "POST", "/v1/predict", body, conn=conn)
    assert status == 200
    conn.close()


def test_health_model_metrics_and_errors(served: Agent) -> None:
    status, doc = request(served, "GET", "/v1/health")
    assert status == 200 and doc["status"] == "ok" and doc["version"] == "1.0.0"
    status, doc = request(served, "GET", "/v1/model")
    assert status == 200 and doc["labels"] == ["a", "b", "c"] and doc["inputs"][0]["shape"] == [-1, 4]
    request(served, "POST", "/v1/predict", b'{"inputs": [1, 2]}')
    status, text = request(served, "GET", "/metrics")
    assert status == 200
    assert 'edgeml_agent_model_info{device="dev-http",model="tiny",version="1.0.0",runtime="litert"} 1' in text
    rejected = [ln for ln in text.splitlines() if ln.startswith("edgeml_agent_rejected_total")]
    assert rejected and float(rejected[0].split()[-1]) >= 1
    assert request(served, "GET", "/nope")[0] == 404
    assert request(served, "GET", "/v1/predict")[0] == 405
    status, doc = request(served, "POST", "/v1/predict", b"x" * (65 * 1024))
    assert status == 413 and "exceeds" in doc["error"]
    status, doc = request(served, "POST", "/v1/predict", b"1,2,3,4", "text/csv")
    assert status == 415 and "Content-Type" in doc["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=40,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["inputs", "input", "x"]), json_values, max_size=2).map(
        lambda d: json.dumps(d).encode()
    ),
    st.lists(st.lists(st.floats(width=32), min_size=0, max_size=6), max_size=20).map(
        lambda rows: json.dumps({"inputs": rows}).encode()
    ),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, ctype=st.sampled_from(["application/json", "application/octet-stream", "text/plain", ""]))
def test_fuzzed_predict_never_crashes_or_answers_5xx(served: Agent, body: bytes, ctype: str) -> None:
    status, doc = request(served, "POST", "/v1/predict", body, ctype)
    assert status in (200, 400, 413, 415, 422), (status, doc)
    if status != 200:
        assert isinstance(doc, dict) and doc["error"]
    # the agent keeps serving
    assert request(served, "GET", "/v1/health")[0] == 200


def raw_exchange(agent: Agent, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", agent.http_port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /v1/health HTTP/2.0\r\n\r\n", b"505"),
        (b"POST /v1/predict HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"POST /v1/predict HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", b"400"),
        (b"GET /v1/health HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET /v1/health HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
        (b"POST /v1/predict HTTP/1.1\r\n\r\n", b"411"),
        (b"POST /v1/predict HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", b"400"),
        # a Unicode digit and a number int() refuses: no Content-Length a server can use
        ("POST /v1/predict HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\nab".encode("utf-8"), b"411"),
        (b"POST /v1/predict HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", b"411"),
        # nesting deep enough to exhaust the JSON parser's recursion
        (b"POST /v1/predict HTTP/1.1\r\nContent-Length: 60000\r\n\r\n" + b"[" * 60000, b"400"),
    ],
)
def test_malformed_http_gets_a_4xx_and_the_server_keeps_serving(
    served: Agent, request_bytes: bytes, status: bytes
) -> None:
    answer = raw_exchange(served, request_bytes)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert request(served, "GET", "/v1/health")[0] == 200


def test_pipelined_keep_alive_requests_on_one_socket(served: Agent) -> None:
    body = json.dumps({"inputs": [0.1, 0.2, 0.3, 0.4]}).encode()
    one = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    one += b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    last = b"GET /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(served, one * 3 + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 4 and answer.count(b'"label"') == 3
