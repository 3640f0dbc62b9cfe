"""Messages: round trips keep unknown fields; readers reject other major versions clearly."""

from __future__ import annotations

import json

import pytest

from device_agent.errors import ConfigError, DataError, SchemaError
from device_agent.protocol import (
    BrokerURL,
    DesiredState,
    Event,
    ModelManifest,
    ReportedState,
    Telemetry,
    TelemetrySummary,
    TensorSpec,
    Topics,
    topic_matches,
)
from device_agent.protocol.versions import is_newer, version_key


def test_round_trip_keeps_unknown_fields() -> None:
    d = DesiredState(model="digits", version="2.0.0", shadow_version="3.0.0", shadow_fraction=0.1).to_dict()
    d["added_in_1_3"] = {"x": 1}
    d["schema"] = "desired/1.3"
    back = DesiredState.from_json(json.dumps(d))
    assert back.version == "2.0.0" and back.shadow_fraction == 0.1
    assert back.to_dict()["added_in_1_3"] == {"x": 1}


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "expected a JSON object"),
        (b'{"schema": "desired/2.0", "model": "m", "version": "1"}', "not supported"),
        (b'{"schema": "state/1.0", "device_id": "d"}', "expected a desired message"),
        (b'{"schema": "desired/1.0", "model": "", "version": "1"}', "model must be"),
        (b'{"schema": "desired/1.0", "model": "m", "version": "1", "shadow_fraction": 3}', "between 0 and 1"),
        (b'{"model": "m", "version": "1"}', "schema"),
    ],
)
def test_readers_reject_bad_messages_with_a_clear_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(SchemaError) as info:
        DesiredState.from_json(payload)
    assert fragment in str(info.value)


def test_oversized_message_is_refused() -> None:
    with pytest.raises(SchemaError, match="exceeds"):
        DesiredState.from_json(b" " * (5 * 1024 * 1024))


def test_state_event_telemetry_round_trip() -> None:
    st = ReportedState(device_id="d1", online=False, model="m", version="1")
    assert ReportedState.from_json(st.to_json()) == st
    ev = Event(device_id="d1", seq=4, event="rolled_back", reason="NaN outputs in probation")
    assert Event.from_json(ev.to_json()).reason == "NaN outputs in probation"
    summary = TelemetrySummary.zero([[0.5]])
    summary.latency.add(2.0)
    summary.classes["7"] = 3
    tel = Telemetry(device_id="d1", seq=9, summary=summary, psi=[0.3], drift=True)
    back = Telemetry.from_json(tel.to_json())
    assert back.seq == 9 and back.summary.classes == {"7": 3} and back.summary.latency.count == 1
    assert back.drift is True


def test_manifest_round_trip_and_validation() -> None:
    m = ModelManifest(
        name="digits",
        version="1.0.0",
        inputs=[TensorSpec("x", [-1, 8, 8, 1])],
        outputs=[TensorSpec("y", [-1, 10])],
        labels=[str(i) for i in range(10)],
    )
    back = ModelManifest.from_json(m.to_json())
    assert back.inputs[0].sample_shape == [8, 8, 1] and back.inputs[0].sample_size == 64
    with pytest.raises(SchemaError, match="dtype"):
        ModelManifest.from_dict({**m.to_dict(), "inputs": [{"name": "x", "shape": [1], "dtype": "complex"}]})
    with pytest.raises(SchemaError, match="at least one input"):
        ModelManifest.from_dict({**m.to_dict(), "inputs": []})


def test_topics() -> None:
    t = Topics("plant-a")
    assert t.desired("dev1") == "edgeml/plant-a/devices/dev1/desired"
    assert t.parse_device_topic("edgeml/plant-a/devices/dev1/telemetry") == ("dev1", "telemetry")
    assert t.parse_device_topic("edgeml/plant-b/devices/dev1/telemetry") is None
    assert topic_matches(t.all_devices("state"), t.state("x"))
    assert not topic_matches(t.all_devices("state"), t.telemetry("x"))
    assert topic_matches(f"{t.repo}/#", t.repo_chunk("ab"))
    with pytest.raises(ConfigError):
        t.desired("a/b")
    with pytest.raises(ConfigError):
        Topics("bad+fleet")


def test_broker_url() -> None:
    u = BrokerURL.parse("mqtts://dev%40x:s3cret@broker.local")
    assert (u.host, u.port, u.tls, u.username, u.password) == ("broker.local", 8883, True, "dev@x", "s3cret")
    assert "s3cret" not in str(u)
    assert BrokerURL.parse("127.0.0.1:1999").port == 1999
    for bad in ("http://x", "mqtt://", "mqtt://h:notaport"):
        with pytest.raises(ConfigError):
            BrokerURL.parse(bad)


def test_versions() -> None:
    assert is_newer("1.10.0", "1.9.9")
    assert is_newer("2.0.0", "2.0.0-rc1")
    assert not is_newer("1.0", "1.0.0")
    assert is_newer("0.1", None)
    assert sorted(["1.2", "1.10", "1.2.1", "1.2-rc1"], key=version_key) == ["1.2-rc1", "1.2", "1.2.1", "1.10"]
    with pytest.raises(DataError):
        version_key("latest")
