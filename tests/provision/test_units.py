"""Pure parts: the password hash format, the CA and CRL, the access rules, the registry."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_agent.errors import ConfigError
from edgeml.errors import UsageError
from edgeml.provision.acl import Account, render_emqx_acl, render_mosquitto_acl, rules_for
from edgeml.provision.ca import FleetCA
from edgeml.provision.passwd import (
    hash_password,
    hash_with_mosquitto_passwd,
    parse_password_file,
    render_password_file,
    verify_password,
)
from edgeml.provision.registry import Entry, Registry, validate_device_id
from edgeml.provision.secrets import write_secret


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hash_is_mosquittos_pbkdf2_format() -> None:
    hashed = hash_password("s3cret")
    _, alg, iterations, salt, digest = hashed.split("$")
    assert (alg, iterations) == ("7", "101")
    assert len(salt) == 16 and len(digest) == 88  # base64 of 12 and 64 bytes
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret ", hashed)
    assert hash_password("s3cret") != hashed  # salted
    with pytest.raises(UsageError):
        hash_password("")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_hashes_agree_with_mosquitto_passwd(tmp_path: Path) -> None:
    theirs = hash_with_mosquitto_passwd("dev-1", "pa$$ word!")
    assert theirs is not None and theirs.startswith("$7$101$")
    assert verify_password("pa$$ word!", theirs)
    with pytest.raises(UsageError):
        hash_with_mosquitto_passwd("dev-1", "has:colon")
    assert not verify_password("other", theirs)
    # and the tool accepts ours: mosquitto_passwd -U leaves an already hashed line alone only if it parses;
    # the real broker check is in test_broker_rules (our hashes let devices in).
    path = tmp_path / "pw"
    path.write_text(render_password_file({"dev-1": hash_password("x")}))
    subprocess.run(["mosquitto_passwd", "-b", str(path), "dev-2", "y"], check=True, capture_output=True)
    users = parse_password_file(path.read_text())
    assert set(users) == {"dev-1", "dev-2"} and verify_password("x", users["dev-1"])


def test_password_file_round_trip() -> None:
    text = render_password_file({"b": hash_password("1"), "a": hash_password("2")})
    assert text.splitlines()[0].startswith("a:$7$")
    assert set(parse_password_file("# c\n\n" + text)) == {"a", "b"}
    with pytest.raises(UsageError):
        render_password_file({"a:b": "x"})


def test_fleet_ca_issues_client_and_server_certificates(tmp_path: Path) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca", "plant")
    assert mode(ca.key_path) == 0o600
    client = ca.issue_client("dev-7")
    cert = x509.load_pem_x509_certificate(client.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-7"
    assert cert.issuer == ca.cert.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    cert.verify_directly_issued_by(ca.cert)
    server = x509.load_pem_x509_certificate(ca.issue_server(["broker.lan", "10.0.0.5"]).cert_pem)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.lan" in san.get_values_for_type(x509.DNSName)
    assert "10.0.0.5" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    # loading again gives the same CA
    again = FleetCA.load_or_create(tmp_path / "ca")
    assert again.cert == ca.cert
    # the CRL lists what it is given and its number grows
    ca.write_crl([(client.serial, cert.not_valid_before_utc)])
    assert ca.revoked_serials() == {client.serial}
    ca.write_crl([])
    assert ca.revoked_serials() == set()
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3


def test_broken_or_half_ca_is_refused(tmp_path: Path) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    ca.key_path.unlink()
    with pytest.raises(UsageError, match="incomplete"):
        FleetCA.load_or_create(tmp_path / "ca")
    write_secret(ca.key_path, b"not a key")
    with pytest.raises(UsageError, match="cannot be read"):
        FleetCA.load_or_create(tmp_path / "ca")


def test_secret_files_are_0600_from_the_start(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "deep" / "s", "hush")
    assert mode(path) == 0o600 and path.read_text() == "hush"
    write_secret(path, "again")
    assert mode(path) == 0o600 and path.read_text() == "again"
    assert [p.name for p in path.parent.iterdir()] == ["s"]  # no temp file left


def test_device_rules_are_least_privilege() -> None:
    rules = {(r.access, r.topic) for r in rules_for(Account("dev-1", "device", "f"))}
    assert rules == {
        ("read", "edgeml/f/devices/dev-1/desired"),
        ("read", "edgeml/f/repo/#"),
        ("write", "edgeml/f/devices/dev-1/state"),
        ("write", "edgeml/f/devices/dev-1/events"),
        ("write", "edgeml/f/devices/dev-1/telemetry"),
    }
    ctl = {(r.access, r.topic) for r in rules_for(Account("controller", "controller", "f"))}
    assert ("readwrite", "edgeml/f/devices/+/desired") in ctl and ("read", "edgeml/f/devices/#") in ctl
    assert [t for a, t in ctl if a != "read" and "repo" in t] == ["edgeml/f/repo/metadata/#"]  # timestamp refresh
    pub = {(r.access, r.topic) for r in rules_for(Account("publisher", "publisher", "f"))}
    assert pub == {("readwrite", "edgeml/f/repo/#")}


def test_rendered_acl_has_no_shared_device_patterns() -> None:
    text = render_mosquitto_acl([Account("dev-1", "device", "f"), Account("controller", "controller", "f")])
    patterns = [line for line in text.splitlines() if line.startswith("pattern")]
    assert patterns == ["pattern readwrite edgeml/f/probe/%c"]
    assert "user dev-1\ntopic read edgeml/f/devices/dev-1/desired" in text
    emqx = render_emqx_acl([Account("dev-1", "device", "f")])
    assert '{allow, {username, "dev-1"}, publish, ["edgeml/f/devices/dev-1/telemetry"]}.' in emqx
    assert emqx.rstrip().endswith("{deny, all}.")
    with pytest.raises(ConfigError):
        Account("a/b", "device", "f")


def test_registry_add_revoke_and_crl_list(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path / "r.json")
    reg.add(Entry("dev-1", "device", "f", "cert", cert_serial="123"))
    with pytest.raises(UsageError, match="already provisioned"):
        reg.add(Entry("dev-1", "device", "f", "cert", cert_serial="456"))
    reg.add(Entry("dev-1", "device", "f", "cert", cert_serial="456"), replace=True)
    assert [s for s, _ in reg.revoked_certificates()] == [123]  # the replaced certificate
    reg.save()
    assert mode(tmp_path / "r.json") == 0o600
    reg = Registry.open(tmp_path / "r.json")
    reg.revoke("dev-1")
    assert sorted(s for s, _ in reg.revoked_certificates()) == [123, 456]
    assert not reg.devices(include_revoked=False)
    with pytest.raises(UsageError, match="no device"):
        reg.revoke("ghost")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UsageError, match="cannot be read"):
        Registry.open(tmp_path / "bad.json")
    for bad in ("controller", "a b", "x/y", ""):
        with pytest.raises(UsageError):
            validate_device_id(bad)


def test_conf_paths_and_listeners_follow_the_options() -> None:
    from edgeml.provision.broker import BrokerOptions, render_mosquitto_conf

    conf = render_mosquitto_conf(Path("/etc/mosquitto/edgeml"), BrokerOptions(local_port=0, mtls_port=0))
    assert "password_file /etc/mosquitto/edgeml/passwd" in conf
    assert "keyfile /etc/mosquitto/edgeml/server.key" in conf
    listeners = [line for line in conf.splitlines() if line.startswith("listener")]
    assert listeners == ["listener 8883"]
    assert "user mosquitto" in conf and "max_queued_messages 100000" in conf
    for bad in (BrokerOptions(tls_port=0, mtls_port=0, local_port=0), BrokerOptions(tls_port=1883),
                BrokerOptions(max_queued_messages=-1), BrokerOptions(tls_port=70000)):
        with pytest.raises(UsageError):
            bad.validate()
