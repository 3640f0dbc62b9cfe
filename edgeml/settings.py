"""Settings in one place.

The project home (keys, repository, store, runs) comes from ``--home`` or ``EDGEML_HOME``,
default ``./.edgeml``. An optional ``edgeml.toml`` in the home holds defaults. For every
setting: a command-line flag overrides the environment, the environment overrides the file,
the file overrides the built-in default.

``edgeml.toml`` example::

    broker = "mqtt://10.0.0.5:1883"
    fleet = "plant-a"

    [rollout]          # sections for subsystems are read with Settings.section()
    soak = "10m"
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent.protocol.broker import BrokerURL
from edgeml.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib

DEFAULT_HOME = ".edgeml"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_FLEET = "default"
CONFIG_FILE = "edgeml.toml"

# setting name -> environment variable
ENV_VARS = {
    "broker": "EDGEML_BROKER",
    "fleet": "EDGEML_FLEET",
    "store": "EDGEML_STORE",
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one invocation. Build with :func:`load_settings`."""

    home: Path
    broker: str = DEFAULT_BROKER
    fleet: str = DEFAULT_FLEET
    store: str = ""
    file: Mapping[str, Any] = field(default_factory=dict)

    @property
    def broker_url(self) -> BrokerURL:
        return BrokerURL.parse(self.broker)

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def repo_dir(self) -> Path:
        return self.home / "repository"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def store_url(self) -> str:
        """The fleet store's SQLAlchemy URL: SQLite in the home unless set."""
        return self.store or f"sqlite:///{(self.home / 'fleet.db').resolve()}"

    def section(self, name: str) -> Mapping[str, Any]:
        """A table of ``edgeml.toml`` (empty when absent)."""
        value = self.file.get(name, {})
        if not isinstance(value, Mapping):
            raise UsageError(f"{CONFIG_FILE}: [{name}] must be a table", hint=f"fix {self.home / CONFIG_FILE}")
        return value

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


def read_config_file(home: Path) -> dict[str, Any]:
    """Read ``home/edgeml.toml``; missing file -> ``{}``. Raises UsageError on invalid TOML."""
    path = home / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}", hint="fix or remove the file") from exc


def load_settings(
    home: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Resolve settings: flags > environment > ``edgeml.toml`` > defaults.

    ``flags`` may name ``broker``, ``fleet`` or ``store``; ``None`` means "not given".
    Raises :class:`UsageError` for an invalid config file or broker URL.
    """
    env = os.environ if env is None else env
    home_path = Path(home or env.get("EDGEML_HOME") or DEFAULT_HOME)
    file_values = read_config_file(home_path)
    defaults = {"broker": DEFAULT_BROKER, "fleet": DEFAULT_FLEET, "store": ""}
    resolved: dict[str, Any] = {}
    for name, default in defaults.items():
        flag = flags.get(name)
        if flag is not None:
            resolved[name] = flag
        elif env.get(ENV_VARS[name]):
            resolved[name] = env[ENV_VARS[name]]
        elif name in file_values:
            resolved[name] = str(file_values[name])
        else:
            resolved[name] = default
    settings = Settings(home=home_path, file=file_values, **resolved)
    BrokerURL.parse(settings.broker)  # validate early
    return settings
