"""The chunk index: how a target travels over MQTT. Pure, shared by publisher and device.

A target ``models/<name>/<version>/<file>`` is published as a retained *index* at
``repo/targets/<target path>`` and content-addressed retained *chunks* at
``repo/chunks/<sha256>``. The index is **not** signed and needs no signature: each chunk is
checked against its address as it arrives (so a resume re-fetches only what is missing), and
the assembled file is checked against the length and hashes in the signed targets metadata.
The index is only trusted to be small (``max_index_bytes``) and to add up to the signed length.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from device_agent.updater.errors import IntegrityError, MalformedError, OversizeError

SCHEMA = "chunk-index/1.0"
DEFAULT_CHUNK_BYTES = 64 * 1024
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ChunkRef:
    digest: str
    length: int


@dataclass(frozen=True)
class ChunkIndex:
    """The ordered chunks of one target."""

    length: int
    chunks: tuple[ChunkRef, ...]

    def to_json(self) -> bytes:
        body = {"schema": SCHEMA, "length": self.length, "chunks": [[c.digest, c.length] for c in self.chunks]}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, payload: bytes, what: str, max_length: int, max_chunk_bytes: int) -> ChunkIndex:
        """Parse and bound-check an index. ``max_length`` is the signed target length.

        Raises MalformedError (not an index), OversizeError (a chunk or the total is too big).
        """
        try:
            data: Any = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedError(f"chunk index of {what} is not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("schema"), str):
            raise MalformedError(f"chunk index of {what}: expected an object with a schema")
        if data["schema"].split("/")[0] != "chunk-index" or not data["schema"].startswith("chunk-index/1."):
            raise MalformedError(f"chunk index of {what}: unsupported schema {data['schema']!r}")
        length, raw = data.get("length"), data.get("chunks")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0 or not isinstance(raw, list):
            raise MalformedError(f"chunk index of {what}: 'length' and 'chunks' are required")
        if length > max_length:
            raise OversizeError(f"chunk index of {what} announces {length} bytes; the signed length is {max_length}")
        refs: list[ChunkRef] = []
        total = 0
        for item in raw:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not _DIGEST.match(item[0])
                or not isinstance(item[1], int)
                or isinstance(item[1], bool)
                or item[1] <= 0
            ):
                raise MalformedError(f"chunk index of {what}: bad chunk entry {str(item)[:80]}")
            if item[1] > max_chunk_bytes:
                raise OversizeError(f"chunk index of {what}: a chunk of {item[1]} bytes exceeds {max_chunk_bytes}")
            total += item[1]
            if total > length:
                raise OversizeError(f"chunk index of {what}: chunks add up to more than {length} bytes")
            refs.append(ChunkRef(item[0], item[1]))
        if total != length:
            raise IntegrityError(f"chunk index of {what}: chunks add up to {total} bytes, index says {length}")
        return cls(length, tuple(refs))


def split(data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[ChunkIndex, dict[str, bytes]]:
    """Split ``data`` into content-addressed chunks: ``(index, {digest: bytes})``."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    refs: list[ChunkRef] = []
    blobs: dict[str, bytes] = {}
    for start in range(0, len(data), chunk_bytes):
        part = data[start : start + chunk_bytes]
        digest = hashlib.sha256(part).hexdigest()
        refs.append(ChunkRef(digest, len(part)))
        blobs[digest] = part
    return ChunkIndex(len(data), tuple(refs)), blobs


def check_chunk(ref: ChunkRef, payload: bytes) -> None:
    """Raise IntegrityError unless ``payload`` is the chunk ``ref`` names."""
    if len(payload) != ref.length or hashlib.sha256(payload).hexdigest() != ref.digest:
        raise IntegrityError(
            f"chunk {ref.digest[:12]}… does not match its address ({len(payload)} bytes received)",
            hint="someone altered it on the broker; republish with `edgeml repo push --all`",
        )
