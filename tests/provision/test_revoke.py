"""Revocation against a real Mosquitto running the generated configuration: after a reload
(SIGHUP) the revoked device is refused — its certificate by the CRL, its password by the
password file — while the rest of the fleet keeps working."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from device_agent.protocol.topics import Topics
from edgeml.cli import main
from edgeml.provision.device import provision_device, revoke_device
from tests.provision.conftest import build_fleet
from tests.provision.helpers import connect, publish, subscribe, wait_for
from tests.provision.test_broker_rules import as_device, as_service

T = Topics("default")


def test_revoked_devices_are_refused_after_reload(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path, {"dev-a": "cert", "dev-r": "cert", "dev-q": "password"})
    try:
        for name in ("dev-a", "dev-r", "dev-q"):
            conn = as_device(fleet, name)
            assert conn.ok, f"{name}: {conn.reason}"
            conn.close()
        q_password = fleet.password_of("dev-q")
        # dev-r stays connected across the revocation: it must lose its rights at the reload
        live = as_device(fleet, "dev-r")
        assert live.ok
        ctl = as_service(fleet, "controller")
        subscribe(ctl, T.all_devices("telemetry"))

        revoke_device(fleet.paths, "dev-r")
        result = CliRunner().invoke(main, ["--home", str(fleet.settings.home), "device", "revoke", "dev-q"])
        assert result.exit_code == 0, result.output
        assert q_password not in result.output
        # the broker folder of `edgeml broker config` was refreshed in place
        assert "dev-q:" not in fleet.files.password_file.read_text()
        assert "user dev-r" not in fleet.files.acl_file.read_text()
        serial = int(fleet.paths.registry().get("dev-r").cert_serial)  # type: ignore[union-attr]
        assert serial in fleet.paths.ca().revoked_serials()

        fleet.broker.reload()

        refused_cert = as_device(fleet, "dev-r")
        assert not refused_cert.ok, "revoked certificate still accepted"
        refused_pw = connect(
            fleet.opts.tls_port, username="dev-q", password=q_password, ca=fleet.device_dir("dev-q") / "ca.crt"
        )
        assert not refused_pw.ok, "revoked password still accepted"
        # the connection that was open lost its access rules with the reload
        publish(live, T.telemetry("dev-r"), b"after-revocation")
        # the rest of the fleet is unaffected
        ok = as_device(fleet, "dev-a")
        assert ok.ok, ok.reason
        publish(ok, T.telemetry("dev-a"), b"still-here")
        assert wait_for(lambda: b"still-here" in ctl.payloads(T.telemetry("dev-a")))
        time.sleep(0.3)
        assert b"after-revocation" not in ctl.payloads(T.telemetry("dev-r"))
        for c in (ok, ctl, live):
            c.close()

        # provisioning the device again issues new credentials that work after a reload
        again = provision_device(
            fleet.paths, "dev-r", fleet.bundles, broker=f"mqtts://127.0.0.1:{fleet.opts.mtls_port}", auth="cert"
        )
        assert again.cert_fingerprint != fleet.devices["dev-r"].cert_fingerprint
        fleet.broker.reload()
        back = as_device(fleet, "dev-r")
        assert back.ok, back.reason
        back.close()
        # the old certificate stays revoked
        assert serial in fleet.paths.ca().revoked_serials()
    finally:
        fleet.broker.stop()
