"""Updater limits: every size, count and wait has a named cap."""

from __future__ import annotations

from dataclasses import dataclass

from tuf.ngclient import UpdaterConfig as TufConfig

from device_agent.errors import ConfigError

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class UpdaterConfig:
    """Caps and timeouts of one :class:`~device_agent.updater.Updater`.

    Sizes are in bytes, times in seconds. Metadata caps are handed to python-tuf (it refuses a
    longer download); ``max_target_bytes`` caps a model whatever its signed length says;
    ``max_chunk_bytes`` and ``max_index_bytes`` cap the (unsigned) chunk index and each chunk.
    """

    root_max_bytes: int = 512 * KIB
    timestamp_max_bytes: int = 16 * KIB
    snapshot_max_bytes: int = 2 * MIB
    targets_max_bytes: int = 5 * MIB
    max_target_bytes: int = 256 * MIB
    max_chunk_bytes: int = 256 * KIB
    max_index_bytes: int = 1 * MIB
    max_root_rotations: int = 32
    window: int = 16
    request_timeout: float = 15.0
    connect_timeout: float = 10.0
    reconnect_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "root_max_bytes",
            "timestamp_max_bytes",
            "snapshot_max_bytes",
            "targets_max_bytes",
            "max_target_bytes",
            "max_chunk_bytes",
            "max_index_bytes",
            "max_root_rotations",
            "window",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"updater setting {name}={value!r} must be a positive integer")
        for name in ("request_timeout", "connect_timeout", "reconnect_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"updater setting {name}={value!r} must be a non-negative number of seconds")

    def tuf_config(self) -> TufConfig:
        """The python-tuf ``UpdaterConfig`` carrying the metadata caps."""
        return TufConfig(
            max_root_rotations=self.max_root_rotations,
            root_max_length=self.root_max_bytes,
            timestamp_max_length=self.timestamp_max_bytes,
            snapshot_max_length=self.snapshot_max_bytes,
            targets_max_length=self.targets_max_bytes,
            prefix_targets_with_hash=False,
        )
