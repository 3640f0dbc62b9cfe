"""Verified model updates over MQTT: python-tuf's client with an MQTT fetcher.

```python
from device_agent.updater import Updater, UpdaterConfig
with Updater(metadata_dir, "mqtt://broker:1883", Topics("plant-a")) as up:
    up.refresh()
    rel = up.newest("digits")
    if rel and up.is_newer(rel, installed_version):
        up.download(rel, slot_dir / rel.manifest.filename, installed=installed_version)
```
"""

from device_agent.updater.config import UpdaterConfig
from device_agent.updater.errors import (
    BrokerUnavailableError,
    IntegrityError,
    MalformedError,
    MetadataExpiredError,
    NotPublishedError,
    OlderVersionError,
    OversizeError,
    ReleaseNotFoundError,
    RollbackError,
    UntrustedMetadataError,
    UpdateDataError,
)
from device_agent.updater.mqtt import TLSFiles
from device_agent.updater.updater import (
    Release,
    Updater,
    decode_manifest,
    encode_manifest,
    release_from_target,
    target_path,
)

__all__ = [
    "BrokerUnavailableError",
    "IntegrityError",
    "MalformedError",
    "MetadataExpiredError",
    "NotPublishedError",
    "OlderVersionError",
    "OversizeError",
    "Release",
    "TLSFiles",
    "ReleaseNotFoundError",
    "RollbackError",
    "UntrustedMetadataError",
    "UpdateDataError",
    "Updater",
    "UpdaterConfig",
    "decode_manifest",
    "encode_manifest",
    "release_from_target",
    "target_path",
]
