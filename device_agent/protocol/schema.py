"""Shared schema machinery: versioned JSON records whose unknown fields survive a round trip.

Every message carries ``"schema": "<kind>/<major>.<minor>"``. Readers accept any minor version
of the major they know and reject another major with a :class:`SchemaError` that says so.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from device_agent.errors import SchemaError

T = TypeVar("T", bound="Record")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def parse_json(payload: bytes | str, what: str, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode a JSON object. Raises SchemaError for oversized, non-UTF-8, non-JSON or non-object input."""
    if len(payload) > max_bytes:
        raise SchemaError(f"{what}: message of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SchemaError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise SchemaError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


@dataclass
class Record:
    """Base of versioned records. Subclasses set ``KIND`` and ``MAJOR``/``MINOR``.

    Unknown fields are kept in ``extra`` and written back by :meth:`to_dict`.
    """

    KIND: ClassVar[str] = "record"
    MAJOR: ClassVar[int] = 1
    MINOR: ClassVar[int] = 0

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def schema_tag(cls) -> str:
        return f"{cls.KIND}/{cls.MAJOR}.{cls.MINOR}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["schema"] = self.schema_tag()
        for f in fields(self):
            if f.name == "extra":
                continue
            out[f.name] = _encode(getattr(self, f.name))
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True, allow_nan=False).encode()

    @classmethod
    def check_schema(cls, data: dict[str, Any]) -> None:
        tag = data.get("schema")
        if not isinstance(tag, str) or "/" not in tag:
            raise SchemaError(f"{cls.KIND}: missing or invalid 'schema' field {tag!r}")
        kind, _, version = tag.partition("/")
        if kind != cls.KIND:
            raise SchemaError(f"expected a {cls.KIND} message, got {kind!r}")
        major = version.split(".", 1)[0]
        if major != str(cls.MAJOR):
            raise SchemaError(
                f"{cls.KIND} schema version {version} is not supported (this reader knows {cls.MAJOR}.x)",
                hint="upgrade this reader to a release that understands the newer format",
            )

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a decoded dict. Raises SchemaError on a wrong kind, major version or
        missing/mistyped required field."""
        cls.check_schema(data)
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            if name in data:
                kwargs[name] = data[name]
            elif f.default is MISSING and f.default_factory is MISSING:
                raise SchemaError(f"{cls.KIND}: required field {name!r} is missing")
        extra = {k: v for k, v in data.items() if k not in known and k != "schema"}
        try:
            obj = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"{cls.KIND}: {exc}") from exc
        obj.extra = extra
        obj.validate()
        return obj

    @classmethod
    def from_json(cls: type[T], payload: bytes | str) -> T:
        return cls.from_dict(parse_json(payload, cls.KIND))

    def validate(self) -> None:
        """Check field types and values; raise SchemaError. Subclasses extend."""


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def require(cond: bool, kind: str, message: str) -> None:
    """Raise SchemaError(f"{kind}: {message}") unless ``cond``."""
    if not cond:
        raise SchemaError(f"{kind}: {message}")
