"""Error families shared by the device side (and rendered by the host CLI).

Two families, as in python-tuf: :class:`DataError` — the data is bad (tampered, malformed,
expired, too large, out of order) — and :class:`TransportError` — the network or broker failed
and a retry may succeed. Every error carries a ``hint`` for the person reading it: what to do
next, and what was kept safe.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the device side raises on purpose.

    ``message`` says what was wrong; ``hint`` says what to do next (may be empty).
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class DataError(AgentError):
    """The data is bad: a retry with the same data will fail the same way."""


class TransportError(AgentError):
    """The transport failed: the broker or network did not deliver; a retry may succeed."""


class ConfigError(AgentError):
    """A setting is missing or invalid."""


class SchemaError(DataError):
    """A message does not match the schema this reader understands."""
