"""The generated configuration, enforced by a real Mosquitto: who may read and write what,
anonymous refusal, TLS trust, and queue limits sized for the collector."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from device_agent.protocol.topics import Topics
from edgeml.provision.ca import FleetCA
from tests.provision.conftest import Fleet
from tests.provision.helpers import Conn, connect, publish, subscribe, wait_for

T = Topics("default")


def as_device(fleet: Fleet, name: str, **kw: object) -> Conn:
    folder = fleet.device_dir(name)
    if fleet.devices[name].auth == "cert":
        return connect(
            fleet.opts.mtls_port, ca=folder / "ca.crt", cert=folder / "client.crt", key=folder / "client.key", **kw
        )
    return connect(fleet.opts.tls_port, username=name, password=fleet.password_of(name), ca=folder / "ca.crt", **kw)


def as_service(fleet: Fleet, name: str, **kw: object) -> Conn:
    return connect(fleet.opts.local_port, username=name, password=fleet.service_password(name), **kw)


def test_every_identity_gets_in(fleet: Fleet) -> None:
    for conn in (as_device(fleet, "dev-a"), as_device(fleet, "dev-p"), as_service(fleet, "controller")):
        assert conn.ok, conn.reason
        conn.close()
    # the password listener is TLS too
    conn = as_device(fleet, "dev-p")
    assert conn.ok
    conn.close()


def test_anonymous_and_wrong_password_are_refused(fleet: Fleet) -> None:
    ca = fleet.files.ca_cert
    assert not connect(fleet.opts.local_port).ok
    assert not connect(fleet.opts.tls_port, ca=ca).ok
    assert not connect(fleet.opts.tls_port, username="dev-p", password="not-the-password", ca=ca).ok
    assert not connect(fleet.opts.local_port, username="controller", password="guess").ok
    # a device's password does not open another account
    assert not connect(fleet.opts.tls_port, username="dev-a", password=fleet.password_of("dev-p"), ca=ca).ok
    # the mutual-TLS listener wants a certificate
    assert not connect(fleet.opts.mtls_port, username="dev-p", password=fleet.password_of("dev-p"), ca=ca).ok


def test_device_reads_only_its_own_desired_state(fleet: Fleet) -> None:
    ctl = as_service(fleet, "controller")
    assert ctl.ok, ctl.reason
    publish(ctl, T.desired("dev-a"), b'{"for": "a"}', retain=True)
    publish(ctl, T.desired("dev-b"), b'{"for": "b"}', retain=True)
    a = as_device(fleet, "dev-a")
    assert a.ok, a.reason
    subscribe(a, T.desired("dev-a"), T.desired("dev-b"), T.all_devices("desired"), f"{T.root}/#")
    assert wait_for(lambda: T.desired("dev-a") in a.topics())
    publish(ctl, T.desired("dev-b"), b'{"for": "b", "again": 1}', retain=True)
    publish(ctl, T.desired("dev-a"), b'{"for": "a", "again": 1}', retain=True)
    assert wait_for(lambda: b'{"for": "a", "again": 1}' in a.payloads(T.desired("dev-a")))
    time.sleep(0.3)
    assert T.desired("dev-b") not in a.topics()
    assert all("dev-b" not in t for t in a.topics())
    a.close()
    ctl.close()


def test_device_writes_only_its_own_reports(fleet: Fleet) -> None:
    ctl = as_service(fleet, "controller")
    subscribe(ctl, f"{T.root}/devices/#")
    a = as_device(fleet, "dev-a")
    assert a.ok, a.reason
    publish(a, T.telemetry("dev-a"), b"a-own")
    publish(a, T.state("dev-a"), b"a-state", retain=True)
    publish(a, T.events("dev-a"), b"a-event")
    # forbidden: another device's reports, and any desired state
    publish(a, T.telemetry("dev-b"), b"a-forged-telemetry")
    publish(a, T.state("dev-b"), b"a-forged-state", retain=True)
    publish(a, T.desired("dev-b"), b"a-forged-desired", retain=True)
    publish(a, T.desired("dev-a"), b"a-self-desired", retain=True)
    publish(a, f"{T.repo}/metadata/timestamp.json", b"a-forged-metadata", retain=True)
    assert wait_for(lambda: {T.telemetry("dev-a"), T.state("dev-a"), T.events("dev-a")} <= ctl.topics())
    time.sleep(0.5)
    payloads = [p for _, p, _ in ctl.messages]
    assert not [p for p in payloads if b"forged" in p or b"self-desired" in p]
    a.close()
    # nothing forged was retained either: a fresh reader sees no trace of it
    fresh = as_service(fleet, "controller")
    subscribe(fresh, f"{T.root}/#", settle=0.5)
    assert not [p for _, p, _ in fresh.messages if b"forged" in p or b"self-desired" in p]
    fresh.close()
    ctl.close()


def test_device_cannot_subscribe_to_others_reports(fleet: Fleet) -> None:
    b = as_device(fleet, "dev-b")
    a = as_device(fleet, "dev-a")
    subscribe(a, T.telemetry("dev-b"), T.state("dev-b"), T.all_devices("telemetry"))
    publish(b, T.telemetry("dev-b"), b"b-telemetry")
    publish(b, T.state("dev-b"), b"b-state", retain=True)
    time.sleep(0.5)
    assert not a.messages
    a.close()
    b.close()


def test_publisher_writes_repository_devices_read_it(fleet: Fleet) -> None:
    pub = as_service(fleet, "publisher")
    assert pub.ok, pub.reason
    topic = f"{T.repo}/metadata/timestamp.json"
    publish(pub, topic, b'{"signed": "by the publisher"}', retain=True)
    publish(pub, T.desired("dev-a"), b"publisher-desired", retain=True)  # not the publisher's job
    p = as_device(fleet, "dev-p")
    subscribe(p, f"{T.repo}/#", T.desired("dev-p"))
    assert wait_for(lambda: topic in p.topics())
    assert p.payloads(topic)[-1] == b'{"signed": "by the publisher"}'
    ctl = as_service(fleet, "controller")
    subscribe(ctl, T.desired("dev-a"), settle=0.5)
    assert b"publisher-desired" not in ctl.payloads(T.desired("dev-a"))
    for c in (pub, p, ctl):
        c.close()


def test_update_reader_marker_topic_is_private_to_the_client(fleet: Fleet) -> None:
    """The updater publishes a marker on probe/<its client id>; nobody else's probe topic."""
    a = as_device(fleet, "dev-a", client_id="updater-aaa")
    own, other = f"{T.root}/probe/updater-aaa", f"{T.root}/probe/updater-bbb"
    b = as_device(fleet, "dev-b", client_id="updater-bbb")
    subscribe(a, own)
    subscribe(b, other)
    publish(a, own, b"marker-a")
    publish(a, other, b"intrusion")
    assert wait_for(lambda: own in a.topics())
    time.sleep(0.3)
    assert not b.messages
    a.close()
    b.close()


def test_tls_trust_comes_from_the_generated_ca(fleet: Fleet, tmp_path: Path) -> None:
    folder = fleet.device_dir("dev-a")
    good = as_device(fleet, "dev-a")
    assert good.ok, good.reason
    good.close()
    stranger = FleetCA.load_or_create(tmp_path / "other-ca", "other")
    (tmp_path / "other-ca.crt").write_bytes(stranger.cert_pem)
    # the device does not trust a broker vouched for by another CA ...
    bad_server = connect(
        fleet.opts.mtls_port, ca=tmp_path / "other-ca.crt", cert=folder / "client.crt", key=folder / "client.key"
    )
    assert not bad_server.ok and "CERTIFICATE_VERIFY_FAILED" in bad_server.reason.upper().replace(" ", "_")
    bad_pw = connect(fleet.opts.tls_port, username="dev-p", password=fleet.password_of("dev-p"),
                     ca=tmp_path / "other-ca.crt")
    assert not bad_pw.ok
    # ... and the broker does not accept a client certificate from another CA, even with a valid CN
    forged = stranger.issue_client("dev-a")
    (tmp_path / "forged.crt").write_bytes(forged.cert_pem)
    (tmp_path / "forged.key").write_bytes(forged.key_pem)
    impostor = connect(
        fleet.opts.mtls_port, ca=fleet.files.ca_cert, cert=tmp_path / "forged.crt", key=tmp_path / "forged.key"
    )
    assert not impostor.ok


def test_queue_holds_more_than_mosquittos_default_for_the_collector(fleet: Fleet) -> None:
    """Mosquitto's default max_queued_messages 1000 would drop QoS 1 telemetry for a collector
    that is away; the generated limits keep every message of a 3000-message backlog."""
    n = 3000
    ctl = as_service(fleet, "controller", client_id="collector-q", clean=False)
    subscribe(ctl, T.all_devices("telemetry"))
    ctl.close()  # the persistent session stays; messages queue for it
    a = as_device(fleet, "dev-a")
    assert a.client is not None
    infos = [a.client.publish(T.telemetry("dev-a"), json.dumps({"seq": i}).encode(), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    a.close()
    back = as_service(fleet, "controller", client_id="collector-q", clean=False)
    assert back.ok
    assert wait_for(lambda: len(back.messages) >= n, timeout=20), len(back.messages)
    seqs = {json.loads(p)["seq"] for p in back.payloads(T.telemetry("dev-a"))}
    assert seqs == set(range(n))
    back.close()


def test_generated_conf_states_its_limits(fleet: Fleet) -> None:
    conf = fleet.files.conf.read_text()
    assert "allow_anonymous false" in conf
    assert "max_queued_messages 100000" in conf
    assert "max_inflight_messages" in conf
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    assert "crlfile" in conf


@pytest.mark.parametrize("name", ["passwd", "server.key"])
def test_broker_secrets_are_private(fleet: Fleet, name: str) -> None:
    assert (fleet.files.directory / name).stat().st_mode & 0o777 == 0o600


def test_controller_refreshes_the_timestamp_through_its_own_account(fleet: Fleet) -> None:
    """The fleet controller re-signs the timestamp before it expires and pushes it with the
    controller account; devices read the new one. The publisher's rights are not needed."""
    from datetime import datetime, timedelta, timezone

    from edgeml.fleet.controller import refresh_timestamp_if_due
    from edgeml.release.repo import Repository
    from edgeml.settings import load_settings

    url = f"mqtt://controller:{fleet.service_password('controller')}@127.0.0.1:{fleet.opts.local_port}"
    settings = load_settings(fleet.settings.home, env={}, broker=url)
    before = Repository(settings).status()["timestamp"]["version"]
    assert refresh_timestamp_if_due(settings, url, now=datetime.now(timezone.utc) + timedelta(days=3650))
    after = Repository(settings).status()["timestamp"]["version"]
    assert after == before + 1
    dev = as_device(fleet, "dev-b")
    topic = T.repo_metadata("timestamp.json")
    subscribe(dev, topic)

    def version(payload: bytes) -> object:
        signed = json.loads(payload).get("signed")
        return signed.get("version") if isinstance(signed, dict) else None

    assert wait_for(lambda: any(version(p) == after for p in dev.payloads(topic)))
    dev.close()
