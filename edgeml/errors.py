"""Host-side errors. The CLI renders every :class:`EdgemlError` in one place with exit code 2."""

from __future__ import annotations

from device_agent.errors import AgentError


class EdgemlError(AgentError):
    """Base of every host error raised on purpose: ``message`` (what was wrong), ``hint`` (what to do)."""


class UsageError(EdgemlError):
    """The user asked for something that cannot be done as asked (bad option, missing file)."""


class InputDataError(EdgemlError):
    """A dataset or model folder is not usable (wrong format, missing target, too few rows)."""


class ConversionError(EdgemlError):
    """A model could not be converted or quantized."""


class ReleaseError(EdgemlError):
    """Keys, repository or publishing failed."""


class FleetError(EdgemlError):
    """Store, rollout or controller failed."""
