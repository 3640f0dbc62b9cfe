"""Agent settings: one validated dataclass, loaded from ``agent.toml``.

Every limit is a named setting with a sane default. :func:`load_config` reads the TOML file
(the ``[agent]`` table, or the top level) and raises :class:`~device_agent.errors.ConfigError`
naming the key that is wrong and what to write instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from device_agent.errors import ConfigError
from device_agent.protocol.broker import BrokerURL
from device_agent.protocol.topics import check_segment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10
    import tomli as tomllib

RUNTIMES = ("auto", "litert", "tflite_runtime", "tensorflow", "onnxruntime")


@dataclass
class AgentConfig:
    """What one agent needs to run. Construct it directly (the in-process API) or with
    :func:`load_config`. ``validate()`` is called by the constructor and raises ConfigError."""

    device_id: str = "dev-001"
    fleet: str = "default"
    broker: str = "mqtt://127.0.0.1:1883"
    data_dir: Path = Path("agent-data")
    http_address: Optional[str] = "127.0.0.1:8080"
    model: Optional[str] = None
    group: Optional[str] = None
    topic_prefix: str = "edgeml"
    # MQTT credentials and TLS (the URL may also carry user:pass; these win when set)
    username: Optional[str] = None
    password: Optional[str] = None
    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    keepalive: int = 30
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    # trust: the provisioned root.json of the update repository
    trusted_root: Optional[Path] = None
    # a factory-installed model (file + manifest JSON) used when no slot holds a model yet
    bootstrap_model: Optional[Path] = None
    bootstrap_manifest: Optional[Path] = None
    # telemetry
    telemetry_interval: float = 10.0
    spool_max_windows: int = 8640
    telemetry_sample_max: int = 4096
    drift_psi_threshold: float = 0.2
    # updates
    update_check_interval: float = 300.0
    probation_requests: int = 50
    probation_seconds: float = 30.0
    probation_max_error_rate: float = 0.05
    probation_max_nonfinite: int = 0
    probation_latency_factor: float = 1.0
    max_update_attempts: int = 3
    # a download the data checks rejected (e.g. expired metadata before the publisher re-signs) is
    # tried again after this long; a rolled-back or failed model is not
    rejected_retry_s: float = 600.0
    max_download_bytes: int = 256 * 1024 * 1024
    update_timeout: float = 15.0
    # inference
    runtime: str = "auto"
    threads: int = 1
    max_batch: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    # audit log
    audit_log: bool = True
    audit_max_bytes: int = 4 * 1024 * 1024
    audit_backups: int = 3
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        for name in ("ca_file", "cert_file", "key_file", "trusted_root", "bootstrap_model", "bootstrap_manifest"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError naming the first invalid setting."""
        check_segment(self.device_id, "device_id")
        check_segment(self.fleet, "fleet")
        self.broker_url  # noqa: B018 - parses, raises ConfigError
        if self.model is not None:
            check_segment(self.model, "model")
        if self.group is not None:
            check_segment(self.group, "group")
        if self.http_address is not None:
            parse_address(self.http_address)
        _positive(self, "telemetry_interval", "update_check_interval", "reconnect_min_s", "reconnect_max_s",
                  "rejected_retry_s")
        _positive(self, "probation_seconds", "probation_latency_factor", "update_timeout")
        _positive_int(self, "spool_max_windows", "telemetry_sample_max", "max_update_attempts", "threads")
        _positive_int(self, "max_batch", "max_body_bytes", "max_download_bytes", "audit_max_bytes", "keepalive")
        if not isinstance(self.probation_requests, int) or self.probation_requests < 0:
            raise ConfigError("probation_requests must be an integer >= 0", hint="e.g. probation_requests = 50")
        if not 0.0 <= float(self.probation_max_error_rate) <= 1.0:
            raise ConfigError("probation_max_error_rate must be between 0 and 1", hint="e.g. 0.05")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError("reconnect_max_s must be >= reconnect_min_s", hint="e.g. 0.2 and 30")
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}", hint='use runtime = "auto"'
            )
        if (self.bootstrap_model is None) != (self.bootstrap_manifest is None):
            raise ConfigError(
                "bootstrap_model and bootstrap_manifest go together",
                hint="set both (the model file and its manifest JSON) or neither",
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("cert_file and key_file go together", hint="set both for TLS client certificates")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level {self.log_level!r} is not debug, info, warning or error")

    @property
    def broker_url(self) -> BrokerURL:
        url = BrokerURL.parse(self.broker)
        if self.username is not None or self.password is not None:
            url = replace(url, username=self.username, password=self.password)
        return url

    @property
    def http_host_port(self) -> tuple[str, int] | None:
        return parse_address(self.http_address) if self.http_address is not None else None

    # -------------------------------------------------------------- folders
    @property
    def metadata_dir(self) -> Path:
        return self.data_dir / "tuf" / "metadata"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "tuf" / "cache"

    @property
    def slots_dir(self) -> Path:
        return self.data_dir / "slots"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "update-state.json"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit" / "predictions.jsonl"


def parse_address(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port). Raises ConfigError."""
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"http_address {value!r} is not HOST:PORT",
            hint='e.g. http_address = "127.0.0.1:8080" (port 0 picks a free one); omit it to disable HTTP',
        )
    return host.strip("[]"), int(port)


def _positive(cfg: AgentConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}", hint=f"e.g. {name} = 10")


def _positive_int(cfg: AgentConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}", hint=f"e.g. {name} = 100")


_PATH_KEYS = {"data_dir", "ca_file", "cert_file", "key_file", "trusted_root", "bootstrap_model", "bootstrap_manifest"}


def config_from_mapping(data: dict[str, Any], base_dir: Path | None = None) -> AgentConfig:
    """Build an AgentConfig from a dict (e.g. parsed TOML). Relative paths are resolved against
    ``base_dir``. Raises ConfigError for unknown keys or wrong types."""
    known = {f.name for f in fields(AgentConfig) if f.name != "extra"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in agent config: {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(known))}",
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _PATH_KEYS and value is not None:
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a path string, got {value!r}")
            p = Path(value).expanduser()
            if base_dir is not None and not p.is_absolute():
                p = base_dir / p
            value = p
        kwargs[key] = value
    try:
        return AgentConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid agent config: {exc}") from exc


def load_config(path: Path) -> AgentConfig:
    """Read ``agent.toml`` (keys at the top level or under ``[agent]``). Raises ConfigError when the
    file is missing, is not TOML, or a setting is invalid."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {path}: {exc.strerror}", hint="pass --config PATH") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="check the line named above") from exc
    if "agent" in data and isinstance(data["agent"], dict):
        data = {**{k: v for k, v in data.items() if k != "agent"}, **data["agent"]}
    return config_from_mapping(data, base_dir=path.resolve().parent)
