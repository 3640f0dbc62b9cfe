"""python-tuf's ``FetcherInterface`` over MQTT retained messages.

python-tuf asks for URLs; this fetcher maps them to topics of :class:`~device_agent.protocol.Topics`:

- ``mqtt:metadata/<file>`` -> ``repo/metadata/<file>`` (one retained message; a missing one is
  reported as HTTP 404 so that python-tuf stops looking for the next root version at once);
- ``mqtt:targets/<target path>`` -> the chunk index ``repo/targets/<target path>``, then the
  chunks ``repo/chunks/<sha256>`` in windows. Each chunk is checked against its address as it
  arrives and kept in ``cache_dir`` so that a resume fetches only what is missing. python-tuf
  still checks the whole target's signed length and hashes before a byte is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Optional
from urllib.parse import unquote

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient.fetcher import FetcherInterface

from device_agent.protocol.topics import Topics
from device_agent.updater.chunks import ChunkIndex, ChunkRef, check_chunk
from device_agent.updater.config import UpdaterConfig
from device_agent.updater.errors import KEPT, IntegrityError, MalformedError, NotPublishedError
from device_agent.updater.mqtt import RetainedReader

log = logging.getLogger("edgeml.agent.updater")

METADATA_URL = "mqtt:metadata/"
TARGETS_URL = "mqtt:targets/"

Progress = Callable[[int, int], None]


@dataclass
class FetchStats:
    chunks_fetched: int = 0
    chunks_from_cache: int = 0
    bytes_fetched: int = 0


class MqttFetcher(FetcherInterface):
    """Fetch metadata and chunked targets from retained MQTT messages (see module doc)."""

    def __init__(self, reader: RetainedReader, config: UpdaterConfig, cache_dir: Path) -> None:
        self.reader = reader
        self.topics: Topics = reader.topics
        self.config = config
        self.cache_dir = Path(cache_dir)
        self.stats = FetchStats()
        self.progress: Optional[Progress] = None
        self._max_length: Optional[int] = None

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """As python-tuf's, but the cap is also known while fetching (refuse early)."""
        self._max_length = max_length
        try:
            with super().download_file(url, max_length) as fh:
                yield fh
        finally:
            self._max_length = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        if url.startswith(METADATA_URL):
            return self._metadata(unquote(url[len(METADATA_URL) :]))
        if url.startswith(TARGETS_URL):
            return self._target(unquote(url[len(TARGETS_URL) :]))
        raise MalformedError(f"unexpected download location {url!r}")

    # metadata ---------------------------------------------------------------------------------
    def _metadata(self, filename: str) -> Iterator[bytes]:
        if "/" in filename or filename.startswith("."):
            raise MalformedError(f"unexpected metadata name {filename!r}")
        # python-tuf passes the length signed in snapshot/timestamp when there is one: never more
        # than this device's own cap for the role (a stolen online key must not lift the caps)
        cap = min(self._max_length or self.config.root_max_bytes, self._role_cap(filename))
        payload = self.reader.get(self.topics.repo_metadata(filename), cap)
        if payload is None:
            raise DownloadHTTPError(f"{filename} is not retained on the broker", 404)
        yield payload

    def _role_cap(self, filename: str) -> int:
        role = filename[: -len(".json")].split(".")[-1]
        return {
            "root": self.config.root_max_bytes,
            "timestamp": self.config.timestamp_max_bytes,
            "snapshot": self.config.snapshot_max_bytes,
        }.get(role, self.config.targets_max_bytes)

    # targets ----------------------------------------------------------------------------------
    def _target(self, path: str) -> Iterator[bytes]:
        cap = min(self._max_length or self.config.max_target_bytes, self.config.max_target_bytes)
        raw = self.reader.get(self.topics.repo_target_index(path), self.config.max_index_bytes)
        if raw is None:
            raise NotPublishedError(
                f"the chunk index of {path} is not retained on the broker",
                hint=f"publish it again with `edgeml repo push`; {KEPT}",
            )
        index = ChunkIndex.parse(raw, path, cap, self.config.max_chunk_bytes)
        done = 0
        refs = list(index.chunks)
        for start in range(0, len(refs), self.config.window):
            window = refs[start : start + self.config.window]
            blobs = self._window(path, window)
            for ref in window:
                done += ref.length
                yield blobs[ref.digest]
            if self.progress is not None:
                self.progress(done, index.length)

    def _window(self, path: str, window: list[ChunkRef]) -> dict[str, bytes]:
        blobs: dict[str, bytes] = {}
        missing: list[ChunkRef] = []
        for ref in window:
            cached = self._cached(ref)
            if cached is not None:
                blobs[ref.digest] = cached
                self.stats.chunks_from_cache += 1
            elif ref.digest not in {m.digest for m in missing}:
                missing.append(ref)
        if missing:
            topics = {self.topics.repo_chunk(ref.digest): ref for ref in missing}
            got = self.reader.get_many(list(topics), self.config.max_chunk_bytes)
            for topic, ref in topics.items():
                payload = got.get(topic)
                if payload is None:
                    raise NotPublishedError(
                        f"chunk {ref.digest[:12]}… of {path} is not retained on the broker",
                        hint=f"publish it again with `edgeml repo push --all`; {KEPT}",
                    )
                check_chunk(ref, payload)
                self._store(ref, payload)
                blobs[ref.digest] = payload
                self.stats.chunks_fetched += 1
                self.stats.bytes_fetched += len(payload)
        return blobs

    # chunk cache ------------------------------------------------------------------------------
    def _chunk_path(self, digest: str) -> Path:
        return self.cache_dir / digest

    def _cached(self, ref: ChunkRef) -> Optional[bytes]:
        path = self._chunk_path(ref.digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            check_chunk(ref, data)
        except IntegrityError:
            path.unlink(missing_ok=True)
            return None
        return data

    def _store(self, ref: ChunkRef, data: bytes) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{ref.digest}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self._chunk_path(ref.digest))

    def clear_cache(self) -> None:
        """Remove every cached chunk."""
        if self.cache_dir.is_dir():
            for p in self.cache_dir.iterdir():
                if p.is_file() and len(p.name.lstrip(".")) >= 64:
                    p.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
