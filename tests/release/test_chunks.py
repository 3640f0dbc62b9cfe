"""The chunk index (pure): split, parse with caps, per-chunk checks."""

from __future__ import annotations

import json

import pytest

from device_agent.updater.chunks import ChunkIndex, check_chunk, split
from device_agent.updater.errors import IntegrityError, MalformedError, OversizeError


def test_split_round_trip_and_bounded_chunks() -> None:
    data = bytes(range(256)) * 1000
    index, blobs = split(data, 4096)
    assert max(c.length for c in index.chunks) <= 4096
    assert b"".join(blobs[c.digest] for c in index.chunks) == data
    again = ChunkIndex.parse(index.to_json(), "t", len(data), 4096)
    assert again == index


def test_parse_refuses_more_than_signed_length() -> None:
    index, _ = split(b"x" * 10_000, 1000)
    with pytest.raises(OversizeError):
        ChunkIndex.parse(index.to_json(), "t", 9_999, 1000)


def test_parse_refuses_oversized_chunk_and_overflowing_sum() -> None:
    index, _ = split(b"y" * 5000, 5000)
    with pytest.raises(OversizeError, match="exceeds"):
        ChunkIndex.parse(index.to_json(), "t", 5000, 4096)
    body = json.loads(index.to_json())
    body["chunks"] = body["chunks"] * 3  # endless: more chunks than the announced length
    with pytest.raises(OversizeError):
        ChunkIndex.parse(json.dumps(body).encode(), "t", 5000, 8192)


@pytest.mark.parametrize(
    "payload",
    [
        b"{nope",
        b"[]",
        b'{"schema":"other/1.0","length":1,"chunks":[]}',
        b'{"schema":"chunk-index/1.0","length":3,"chunks":[["../../etc",3]]}',
        b'{"schema":"chunk-index/1.0","length":"3","chunks":[]}',
    ],
)
def test_parse_refuses_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedError):
        ChunkIndex.parse(payload, "t", 100, 100)


def test_parse_refuses_short_index() -> None:
    index, _ = split(b"z" * 3000, 1000)
    body = json.loads(index.to_json())
    body["chunks"] = body["chunks"][:2]
    with pytest.raises(IntegrityError):
        ChunkIndex.parse(json.dumps(body).encode(), "t", 3000, 1000)


def test_check_chunk_detects_tampering() -> None:
    index, blobs = split(b"abc" * 100, 64)
    ref = index.chunks[0]
    check_chunk(ref, blobs[ref.digest])
    with pytest.raises(IntegrityError):
        check_chunk(ref, b"X" + blobs[ref.digest][1:])
