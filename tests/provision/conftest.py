"""Fixtures: a project home with a real release repository (trusted root), the generated broker
configuration, provisioned devices, and a real Mosquitto running that configuration."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeml.provision.broker import BrokerFiles, BrokerOptions, write_broker_config
from edgeml.provision.device import ProvisionResult, provision_device
from edgeml.provision.paths import ProvisionPaths
from edgeml.settings import Settings, load_settings
from tests.brokers import MosquittoBroker, free_port


def make_home(home: Path) -> Settings:
    """A project home whose release repository has real TUF root metadata."""
    from edgeml.release.keys import init_keys

    settings = load_settings(home, env={})
    init_keys(settings)
    return settings


def options_for_test(workdir: Path) -> BrokerOptions:
    """The generated configuration with test ports and paths: free ports, persistence in the
    test folder, and no privilege drop (the test folders are private to root)."""
    return BrokerOptions(
        tls_port=free_port(),
        mtls_port=free_port(),
        local_port=free_port(),
        local_address="127.0.0.1",
        bind_address="127.0.0.1",
        persistence_dir=str(workdir / "persist"),
        user="root",
    )


@dataclass
class Fleet:
    settings: Settings
    paths: ProvisionPaths
    opts: BrokerOptions
    files: BrokerFiles
    bundles: Path
    devices: dict[str, ProvisionResult]
    broker: MosquittoBroker

    def device_dir(self, name: str) -> Path:
        return self.devices[name].folder

    def password_of(self, name: str) -> str:
        """A password device's password, read from its bundle's agent.toml.in."""
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.9/3.10
            import tomli as tomllib

        return str(tomllib.loads((self.device_dir(name) / "agent.toml.in").read_text())["password"])

    def service_password(self, name: str) -> str:
        return self.paths.service_password(name)


def build_fleet(root: Path, devices: dict[str, str]) -> Fleet:
    """Home + keys, generated broker config, ``devices`` ({id: auth}) provisioned, Mosquitto running it."""
    settings = make_home(root / "home")
    paths = ProvisionPaths.from_settings(settings)
    opts = options_for_test(root)
    (root / "persist").mkdir(parents=True, exist_ok=True)
    files = write_broker_config(paths, root / "broker", opts)
    bundles = root / "bundles"
    results = {}
    for name, auth in devices.items():
        port = opts.mtls_port if auth == "cert" else opts.tls_port
        results[name] = provision_device(paths, name, bundles, broker=f"mqtts://127.0.0.1:{port}", auth=auth)
    broker = MosquittoBroker(root / "mosquitto", port=opts.local_port, config=files.conf.read_text())
    broker.start()
    return Fleet(settings, paths, opts, files, bundles, results, broker)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Devices dev-a, dev-b (certificates) and dev-p (password) on a Mosquitto running the
    generated configuration. Tests must not revoke or reload here (use ``build_fleet``)."""
    f = build_fleet(tmp_path_factory.mktemp("fleet"), {"dev-a": "cert", "dev-b": "cert", "dev-p": "password"})
    yield f
    f.broker.stop()
