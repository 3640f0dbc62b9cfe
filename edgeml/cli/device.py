"""`edgeml device provision|revoke|ls` and `edgeml broker config|run` (registered on the main group).

Thin: options, a call into :mod:`edgeml.provision`, and rendering. Secrets are never printed:
the output names files and certificate fingerprints only.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from edgeml.cli.options import Context, echo_json, json_option, pass_ctx


def _paths(ctx: Context) -> Any:
    from edgeml.provision.paths import ProvisionPaths

    return ProvisionPaths.from_settings(ctx.settings)


@click.group("device")
def device_group() -> None:
    """Device identities: provision (flash) a device, revoke it, list the fleet's registry.

    \b
    Typical flow:
      edgeml broker config --out /etc/mosquitto/edgeml     # once: CA, broker files, service accounts
      edgeml device provision dev-001 --group canary --out bundles/ --broker-url mqtts://broker.lan:8884
      sudo systemctl reload mosquitto                      # the broker learns dev-001's access rules
      scp bundles/dev-001.tar.gz* pi@dev-001: ; ssh pi@dev-001 'tar xzf dev-001.tar.gz && sudo sh dev-001/install.sh'
      edgeml device revoke dev-001 && sudo systemctl reload mosquitto
    """


@device_group.command("provision")
@click.argument("device_id")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the device's files and its bundle (<out>/<id>/, <out>/<id>.tar.gz + .sha256).")
@click.option("--group", default=None, help="Rollout group of the device (e.g. canary).")
@click.option("--auth", type=click.Choice(["cert", "password"]), default="cert", show_default=True,
              help="Client certificate from the fleet CA (mutual TLS) or a username and password over TLS.")
@click.option("--broker-url", default=None,
              help="The broker URL the device connects to (mqtts://). "
              "[default: the --broker host on 8884 (cert) or 8883 (password)]")
@click.option("--model", default=None, help="The model name the device serves (its desired state can change it).")
@click.option("--http", "http_address", default="127.0.0.1:8080", show_default=True,
              help="The device's local predict/health API address.")
@click.option("--root", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Trusted root metadata to install [default: the newest root in the release repository].")
@click.option("--force", is_flag=True, help="Issue new credentials for a device that already has some "
              "(the old ones stop working after the broker reloads).")
@json_option
@pass_ctx
def provision_cmd(
    ctx: Context,
    device_id: str,
    out_dir: Path,
    group: str | None,
    auth: str,
    broker_url: str | None,
    model: str | None,
    http_address: str,
    root: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Create DEVICE_ID's identity and its install bundle.

    The bundle holds agent.toml, the fleet CA certificate, the trusted root of the update
    repository, the credentials (mode 0600) and install.sh, which makes a venv with only the
    device extra and a systemd unit that restarts the agent. Nothing secret is printed.
    """
    from edgeml.provision.device import default_device_broker, provision_device

    paths = _paths(ctx)
    url = broker_url or default_device_broker(ctx.settings.broker, auth)
    result = provision_device(
        paths, device_id, out_dir, broker=url, group=group, auth=auth, model=model,
        http_address=http_address, root=root, force=force,
    )
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(f"provisioned {result.device_id} ({result.auth}) -> {result.broker}")
    if broker_url is None and url.split("://", 1)[1].startswith(("127.", "localhost", "[::1]")):
        click.secho("  warning: the device will look for the broker on itself (loopback); "
                    "pass --broker-url mqtts://BROKER-HOST:PORT", fg="yellow", err=True)
    if result.cert_fingerprint:
        click.echo(f"  certificate sha256 {result.cert_fingerprint}")
    click.echo(f"  files   {result.folder}/ ({', '.join(result.files)})")
    click.echo(f"  bundle  {result.bundle}  sha256 {result.sha256}")
    if result.broker_dir_refreshed:
        click.echo(f"  broker files refreshed in {result.broker_dir_refreshed}: reload the broker (SIGHUP)")
    else:
        click.echo("  no broker folder yet: run `edgeml broker config --out DIR` and start Mosquitto with it")
    click.echo(f"  on the device: tar xzf {result.bundle.name} && sudo sh {result.device_id}/install.sh")


@device_group.command("revoke")
@click.argument("device_id")
@json_option
@pass_ctx
def revoke_cmd(ctx: Context, device_id: str, as_json: bool) -> None:
    """Take DEVICE_ID's access away: off the password file and the ACL, its certificate on the CRL.

    The broker refuses the device once it re-reads its files: `systemctl reload mosquitto`
    (or `kill -HUP <pid>`).
    """
    from edgeml.provision.device import revoke_device

    result = revoke_device(_paths(ctx), device_id)
    if as_json:
        echo_json(result)
        return
    click.echo(f"revoked {device_id} ({result['auth']})")
    if result["broker_dir_refreshed"]:
        click.echo(f"  broker files refreshed in {result['broker_dir_refreshed']}: reload the broker (SIGHUP)")
    else:
        click.echo("  no broker folder recorded: run `edgeml broker config --out DIR`, then reload the broker")


@device_group.command("ls")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked devices.")
@json_option
@pass_ctx
def ls_cmd(ctx: Context, include_revoked: bool, as_json: bool) -> None:
    """List provisioned devices (no secrets)."""
    from edgeml.provision.device import list_devices

    devices = list_devices(_paths(ctx), include_revoked=include_revoked)
    if as_json:
        echo_json({"devices": devices})
        return
    if not devices:
        click.echo("no devices provisioned (edgeml device provision ID --out DIR)")
        return
    click.echo(f"{'device':<24} {'group':<12} {'auth':<9} {'status':<8} cert sha256")
    for d in devices:
        status = "active" if d["active"] else "revoked"
        fp = (d.get("cert_fingerprint") or "-")[:16]
        click.echo(f"{d['name']:<24} {d.get('group') or '-':<12} {d['auth']:<9} {status:<8} {fp}")


@click.group("broker")
def broker_group() -> None:
    """The MQTT broker: a locked-down Mosquitto configuration, or an embedded broker for a laptop."""


@broker_group.command("config")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for mosquitto.conf, passwd, acl, ca.crt, server.crt/.key, crl.pem, emqx-acl.conf.")
@click.option("--hostname", "hostnames", multiple=True,
              help="A name or IP devices use to reach the broker (repeatable; goes in the server certificate).")
@click.option("--tls-port", type=int, default=8883, show_default=True, help="TLS + password listener (0: none).")
@click.option("--mtls-port", type=int, default=8884, show_default=True,
              help="Mutual-TLS listener, client certificate = identity (0: none).")
@click.option("--local-port", type=int, default=1883, show_default=True,
              help="Plain listener on 127.0.0.1 for workstation tools on the broker host, with passwords (0: none).")
@click.option("--install-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the files will live on the broker host, if not --out (paths in mosquitto.conf).")
@click.option("--persistence-dir", default="/var/lib/mosquitto/", show_default=True,
              help="Where Mosquitto keeps retained messages.")
@click.option("--user", default="mosquitto", show_default=True,
              help="The user Mosquitto runs as (it must read passwd and server.key; given ownership when run as root).")
@click.option("--max-queued-messages", type=int, default=100_000, show_default=True,
              help="QoS 1 messages queued per slow client before Mosquitto drops them (its default 1000 loses "
              "telemetry at the collector).")
@click.option("--max-queued-bytes", type=int, default=256 * 1024 * 1024, show_default=True,
              help="Bytes queued per client (the memory cap).")
@click.option("--max-inflight", type=int, default=100, show_default=True, help="QoS 1 messages in flight per client.")
@json_option
@pass_ctx
def broker_config_cmd(
    ctx: Context,
    out_dir: Path,
    hostnames: tuple[str, ...],
    tls_port: int,
    mtls_port: int,
    local_port: int,
    install_dir: Path | None,
    persistence_dir: str,
    user: str,
    max_queued_messages: int,
    max_queued_bytes: int,
    max_inflight: int,
    as_json: bool,
) -> None:
    """Write a locked-down Mosquitto configuration into --out.

    TLS listeners signed by the fleet CA, no anonymous access, a password file and an ACL
    where each device reads only its own desired state and the repository and writes only its
    own state, events and telemetry; the controller and publisher accounts get what they need
    (their passwords: <home>/provision/secrets/, mode 0600). Start it with
    `mosquitto -c OUT/mosquitto.conf`; after `edgeml device provision|revoke` the files are
    refreshed and `kill -HUP` (systemctl reload mosquitto) applies them.
    """
    from edgeml.provision.broker import BrokerOptions, write_broker_config

    paths = _paths(ctx)
    opts = BrokerOptions(
        tls_port=tls_port, mtls_port=mtls_port, local_port=local_port, hostnames=hostnames,
        install_dir=install_dir, persistence_dir=persistence_dir, user=user,
        max_queued_messages=max_queued_messages, max_queued_bytes=max_queued_bytes,
        max_inflight_messages=max_inflight,
    )
    files = write_broker_config(paths, out_dir, opts)
    if as_json:
        echo_json({**files.as_dict(), "secrets_dir": str(paths.secrets_dir)})
        return
    click.echo(f"broker configuration written to {files.directory}")
    for name in ("conf", "password_file", "acl_file", "ca_cert", "server_cert", "server_key", "crl", "emqx_acl"):
        click.echo(f"  {getattr(files, name)}")
    click.echo(f"accounts: {', '.join(files.accounts)}")
    click.echo(f"controller/publisher passwords: {paths.secrets_dir}/ (mode 0600)")
    note = files.directory / "NOTE.txt"
    if note.exists():
        click.echo(f"note: {note.read_text().strip()}")
    click.echo(f"start: mosquitto -c {files.conf}")


@broker_group.command("run")
@click.option("--port", type=int, default=1883, show_default=True, help="Port to listen on (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def broker_run_cmd(port: int, host: str) -> None:
    """Run an embedded MQTT broker (amqtt) in the foreground until Ctrl-C.

    For machines without Mosquitto (demos, laptops): no authentication, no TLS, retained
    messages in memory. A fleet uses Mosquitto with `edgeml broker config`.
    """
    from edgeml.provision.embedded_broker import start_embedded_broker

    handle = start_embedded_broker(port, host=host)
    click.echo(f"embedded broker listening on {handle.url} (anonymous, no TLS: not for a fleet); Ctrl-C stops it")
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        handle.stop()
        click.echo("embedded broker stopped")


def register(main: click.Group) -> None:
    """Add this module's commands to ``main``."""
    main.add_command(device_group)
    main.add_command(broker_group)
