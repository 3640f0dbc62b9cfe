"""Typed errors of the updater: "the data is bad" (:class:`UpdateDataError` and subclasses,
all :class:`~device_agent.errors.DataError`) versus "the transport failed"
(:class:`~device_agent.errors.TransportError`, retry later; chunks already fetched stay cached).

Every error says what was kept safe: the device's trusted metadata and installed model are never
touched by a refused update.
"""

from __future__ import annotations

from device_agent.errors import DataError, TransportError

KEPT = "nothing was installed; the device keeps its current model and trusted metadata"


class UpdateDataError(DataError):
    """The repository served data that failed verification."""


class UntrustedMetadataError(UpdateDataError):
    """Metadata is not signed by a threshold of the keys the trusted root names."""


class RollbackError(UpdateDataError):
    """Metadata version is older than (or mixes with) what the device already trusts."""


class MetadataExpiredError(UpdateDataError):
    """Metadata has expired: the repository is stale or someone replays an old one (freeze)."""


class IntegrityError(UpdateDataError):
    """Bytes do not match the signed length/hashes (tampered chunk or target)."""


class OversizeError(UpdateDataError):
    """Something is larger than the configured cap (endless-data defence)."""


class MalformedError(UpdateDataError):
    """Data could not be parsed (not JSON, wrong structure)."""


class OlderVersionError(UpdateDataError):
    """The offered model version is not newer than the installed one."""


class ReleaseNotFoundError(UpdateDataError):
    """No signed target exists for the requested model name/version."""


class BrokerUnavailableError(TransportError):
    """The broker could not be reached or the connection was lost for too long."""


class NotPublishedError(TransportError):
    """Something the signed metadata refers to is not (yet) retained on the broker."""
