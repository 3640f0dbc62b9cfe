"""The files of a device bundle: ``agent.toml``, the install script, the systemd unit, and the tarball.

Paths on the device are placeholders (``@CONF_DIR@``, ``@DATA_DIR@``, ``@PREFIX@``) filled in
by ``install.sh``, so one bundle installs anywhere (``/etc/edgeml`` by default, a temp folder
in tests).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgeml.provision.secrets import write_secret

DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"


@dataclass
class DeviceIdentity:
    """What goes into one device's ``agent.toml`` (secrets are referenced by file, never inlined)."""

    device_id: str
    fleet: str
    broker: str  # URL without credentials
    auth: str  # cert | password
    group: Optional[str] = None
    model: Optional[str] = None
    http_address: str = DEFAULT_HTTP_ADDRESS


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def render_agent_toml(ident: DeviceIdentity, password: str | None = None) -> str:
    """``agent.toml.in``: the agent's configuration (``device_agent.agent.config.AgentConfig`` keys)
    with ``@CONF_DIR@``/``@DATA_DIR@`` placeholders. With ``password`` the text is a secret:
    write it with mode 0600."""
    values: dict[str, Any] = {
        "device_id": ident.device_id,
        "fleet": ident.fleet,
        "broker": ident.broker,
        "data_dir": "@DATA_DIR@",
        "http_address": ident.http_address,
        "trusted_root": "@CONF_DIR@/root.json",
        "ca_file": "@CONF_DIR@/ca.crt",
    }
    if ident.auth == "cert":
        values["cert_file"] = "@CONF_DIR@/client.crt"
        values["key_file"] = "@CONF_DIR@/client.key"
    else:
        if not password:
            raise ValueError("a password device needs its password")
        values["username"] = ident.device_id
        values["password"] = password
    if ident.group:
        values["group"] = ident.group
    if ident.model:
        values["model"] = ident.model
    lines = [
        f"# edgeml agent configuration for device {ident.device_id} (written by `edgeml device provision`).",
        "# Mode 0600: it may hold the device's broker password." if password else
        "# The device's private key is client.key beside this file (mode 0600).",
    ]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


SYSTEMD_UNIT = """\
[Unit]
Description=edgeml device agent (@DEVICE_ID@)
Wants=network-online.target
After=network-online.target
# keep restarting, however often it fails
StartLimitIntervalSec=0

[Service]
Type=simple
User=@USER@
Group=@USER@
ExecStart=@PREFIX@/bin/edgeml-agent run --config @CONF_DIR@/agent.toml
WorkingDirectory=@DATA_DIR@
Environment=PYTHONUNBUFFERED=1
Restart=always
RestartSec=5
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths=@DATA_DIR@

[Install]
WantedBy=multi-user.target
"""

INSTALL_SH = r"""#!/bin/sh
# Install the edgeml agent for device @DEVICE_ID@ on a Debian / Raspberry Pi OS board.
#   sudo sh install.sh
# Settings (environment):
#   EDGEML_PREFIX      the agent's venv                  [/opt/edgeml]
#   EDGEML_CONF_DIR    configuration and credentials     [/etc/edgeml]
#   EDGEML_DATA_DIR    models, state, spool              [/var/lib/edgeml]
#   EDGEML_PIP_SOURCE  a local checkout or wheel to install instead of edgeml[device]==@VERSION@
#                      from the package registry (e.g. EDGEML_PIP_SOURCE=/src/edgeml)
#   EDGEML_PIP_ARGS    extra pip arguments, e.g. "--index-url https://mirror/simple"
#   EDGEML_SYSTEMD     1 to require the systemd unit, 0 to skip it [auto]
#   EDGEML_USER        the user the service runs as      [edgeml]
#   PYTHON             the interpreter (3.9 or newer)    [python3]
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${EDGEML_PREFIX:-/opt/edgeml}
CONF_DIR=${EDGEML_CONF_DIR:-/etc/edgeml}
DATA_DIR=${EDGEML_DATA_DIR:-/var/lib/edgeml}
PIP_SOURCE=${EDGEML_PIP_SOURCE:-}
PIP_ARGS=${EDGEML_PIP_ARGS:-}
SYSTEMD=${EDGEML_SYSTEMD:-auto}
RUN_USER=${EDGEML_USER:-edgeml}
PYTHON=${PYTHON:-python3}

say() { printf '%s\n' "edgeml-install: $*"; }
die() { printf '%s\n' "edgeml-install: error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || die "Python 3.9 or newer is needed ($("$PYTHON" -V 2>&1) found)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "the venv module is missing (apt-get install python3-venv)"

if [ -f "$HERE/../@DEVICE_ID@.tar.gz.sha256" ] && command -v sha256sum >/dev/null 2>&1; then
  (cd "$HERE/.." && sha256sum -c "@DEVICE_ID@.tar.gz.sha256" >/dev/null) || die "bundle checksum mismatch"
fi

use_systemd=0
if [ "$SYSTEMD" != 0 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  use_systemd=1
  [ "$(id -u)" = 0 ] || die "installing the systemd unit needs root (sudo sh install.sh, or EDGEML_SYSTEMD=0)"
elif [ "$SYSTEMD" = 1 ]; then
  die "systemd is not running here (EDGEML_SYSTEMD=1 asked for it)"
fi

say "creating the agent's venv in $PREFIX"
[ -x "$PREFIX/bin/python" ] || "$PYTHON" -m venv "$PREFIX"
if [ -n "$PIP_SOURCE" ]; then REQ="${PIP_SOURCE}[device]"; else REQ="edgeml[device]==@VERSION@"; fi
say "installing $REQ (only the device extra: no TensorFlow)"
# shellcheck disable=SC2086
"$PREFIX/bin/python" -m pip install --quiet $PIP_ARGS "$REQ" || die "pip install failed"

say "writing configuration to $CONF_DIR"
mkdir -p "$CONF_DIR" "$DATA_DIR"
umask 077
for f in ca.crt root.json; do cp "$HERE/$f" "$CONF_DIR/$f"; chmod 0644 "$CONF_DIR/$f"; done
for f in client.crt client.key; do
  if [ -f "$HERE/$f" ]; then cp "$HERE/$f" "$CONF_DIR/$f"; chmod 0600 "$CONF_DIR/$f"; fi
done
if [ -f "$CONF_DIR/client.crt" ]; then chmod 0644 "$CONF_DIR/client.crt"; fi
fill() {
  sed -e "s#@CONF_DIR@#$CONF_DIR#g" -e "s#@DATA_DIR@#$DATA_DIR#g" -e "s#@PREFIX@#$PREFIX#g" \
      -e "s#@USER@#$RUN_USER#g" "$1"
}
# agent.toml may hold the broker password: 0600 (umask 077 above)
fill "$HERE/agent.toml.in" > "$CONF_DIR/agent.toml"
chmod 0600 "$CONF_DIR/agent.toml"

if [ "$use_systemd" = 1 ]; then
  id "$RUN_USER" >/dev/null 2>&1 || useradd --system --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$RUN_USER"
  chown -R "$RUN_USER:$RUN_USER" "$DATA_DIR"
  for f in client.key agent.toml; do
    if [ -f "$CONF_DIR/$f" ]; then chown "$RUN_USER:$RUN_USER" "$CONF_DIR/$f"; fi
  done
  fill "$HERE/edgeml-agent.service" > /etc/systemd/system/edgeml-agent.service
  systemctl daemon-reload
  systemctl enable --now edgeml-agent.service
  say "installed and started: systemctl status edgeml-agent"
else
  say "systemd not available here (or EDGEML_SYSTEMD=0): skipping the service unit."
  say "start the agent with: $PREFIX/bin/edgeml-agent run --config $CONF_DIR/agent.toml"
fi
say "done: device @DEVICE_ID@"
"""


def fill(template: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_tarball(folder: Path, out: Path) -> tuple[Path, str]:
    """Pack ``folder`` as ``out`` (top-level dir = folder name; file modes kept; 0600 because it
    carries the device's secret), write ``out.sha256`` in ``sha256sum`` format. Returns (path, hex)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=f"{folder.name}/{path.relative_to(folder)}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if path.is_file():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    write_secret(out, buf.getvalue())
    digest = sha256_file(out)
    (out.parent / f"{out.name}.sha256").write_text(f"{digest}  {out.name}\n")
    return out, digest
