"""The device's update client: python-tuf's ngclient ``Updater`` fed by an MQTT fetcher.

Trust starts from ``<metadata_dir>/root.json`` (copied there at provisioning). python-tuf walks
root -> timestamp -> snapshot -> targets, checking signatures, thresholds, versions, expiry,
lengths and hashes; this module adds the MQTT transport, the ML manifest carried in each
target's custom field ``edgeml``, version ordering, atomic writes and typed errors.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import Updater as TufUpdater

from device_agent.errors import AgentError, ConfigError, DataError, TransportError
from device_agent.protocol.broker import BrokerURL
from device_agent.protocol.manifest import ModelManifest
from device_agent.protocol.topics import Topics
from device_agent.protocol.versions import is_newer, version_key
from device_agent.updater.config import UpdaterConfig
from device_agent.updater.errors import (
    KEPT,
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
from device_agent.updater.fetcher import METADATA_URL, TARGETS_URL, MqttFetcher, Progress
from device_agent.updater.mqtt import RetainedReader, TLSFiles

log = logging.getLogger("edgeml.agent.updater")

MODELS_PREFIX = "models/"
TARGET_SCHEMA = "edgeml-target/1.0"


@dataclass(frozen=True)
class Release:
    """One signed model release: ``models/<name>/<version>/<filename>`` plus its verified manifest."""

    name: str
    version: str
    target_path: str
    length: int
    manifest: ModelManifest = field(compare=False)
    hashes: dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "target_path": self.target_path,
            "length": self.length,
            "hashes": dict(self.hashes),
            "manifest": self.manifest.to_dict(),
        }


def target_path(name: str, version: str, filename: str) -> str:
    """The target path of a model release (the layout publisher and device agree on)."""
    return f"{MODELS_PREFIX}{name}/{version}/{filename}"


def encode_manifest(manifest: ModelManifest) -> dict[str, Any]:
    """The target custom field ``edgeml`` for ``manifest``.

    TUF signs canonical JSON, which has no floats, so the manifest (golden vectors, metrics,
    reference profile) travels as JSON text beside its name and version:
    ``{"schema": "edgeml-target/1.0", "name", "version", "manifest": "<manifest JSON>"}``.
    """
    return {
        "schema": TARGET_SCHEMA,
        "name": manifest.name,
        "version": manifest.version,
        "manifest": manifest.to_json().decode(),
    }


def decode_manifest(field: Any, what: str) -> ModelManifest:
    """The ModelManifest in a target's custom field ``edgeml``. Raises MalformedError."""
    if not isinstance(field, dict) or not str(field.get("schema", "")).startswith("edgeml-target/1."):
        raise MalformedError(f"{what} carries no edgeml manifest")
    text = field.get("manifest")
    if not isinstance(text, str):
        raise MalformedError(f"{what}: the edgeml manifest is not JSON text")
    try:
        manifest = ModelManifest.from_json(text)
    except DataError as exc:
        raise MalformedError(f"{what}: {exc.message}") from exc
    if (manifest.name, manifest.version) != (field.get("name"), field.get("version")):
        raise MalformedError(f"{what}: manifest name/version disagree with the target field")
    return manifest


def release_from_target(info: TargetFile) -> Release:
    """Build a Release from a verified TargetFile. Raises MalformedError when the path or the
    manifest in the custom field ``edgeml`` is not a model release."""
    parts = info.path.split("/")
    if len(parts) != 4 or parts[0] + "/" != MODELS_PREFIX:
        raise MalformedError(f"target {info.path!r} is not models/<name>/<version>/<file>")
    _, name, version, filename = parts
    custom = info.custom if isinstance(info.custom, dict) else {}
    try:
        version_key(version)
    except DataError as exc:
        raise MalformedError(f"target {info.path}: {exc.message}") from exc
    manifest = decode_manifest(custom.get("edgeml"), f"target {info.path}")
    if (manifest.name, manifest.version, manifest.filename) != (name, version, filename):
        raise MalformedError(
            f"target {info.path}: manifest says {manifest.name} {manifest.version} {manifest.filename}"
        )
    return Release(name, version, info.path, info.length, manifest, dict(info.hashes))


class Updater:
    """Verified model updates over MQTT (see module doc). Not thread-safe; one per device.

    ``broker`` is a :class:`BrokerURL` or URL string; the updater opens its own connection
    (client id ``client_id`` or a random one; ``tls`` adds CA/client certificate/password).
    ``trusted_root`` (the provisioned root.json) is copied into an empty ``metadata_dir``; after
    that the metadata folder is the device's trust, moved forward by verified root rotations.
    Raises ConfigError when ``metadata_dir`` has no trusted ``root.json``; the broker is
    contacted lazily (first refresh), raising BrokerUnavailableError when unreachable.
    """

    def __init__(
        self,
        metadata_dir: Union[Path, str],
        broker: Union[BrokerURL, str],
        topics: Optional[Topics] = None,
        config: Optional[UpdaterConfig] = None,
        cache_dir: Optional[Union[Path, str]] = None,
        client_id: Optional[str] = None,
        tls: Optional[TLSFiles] = None,
        trusted_root: Optional[Union[Path, str]] = None,
    ) -> None:
        self.metadata_dir = Path(metadata_dir)
        if trusted_root is not None and not (self.metadata_dir / "root.json").exists():
            install_trusted_root(self.metadata_dir, Path(trusted_root))
        if not (self.metadata_dir / "root.json").is_file():
            raise ConfigError(
                f"no trusted root at {self.metadata_dir / 'root.json'}",
                hint="provision the device: copy the repository's root.json there (edgeml device provision)",
            )
        self.topics = topics or Topics()
        self.config = config or UpdaterConfig()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.metadata_dir / "chunk-cache"
        self.reader = RetainedReader(
            broker,
            self.topics,
            client_id=client_id,
            connect_timeout=self.config.connect_timeout,
            request_timeout=self.config.request_timeout,
            reconnect_timeout=self.config.reconnect_timeout,
            tls=tls,
        )
        self.fetcher = MqttFetcher(self.reader, self.config, self.cache_dir)
        self._tuf: Optional[TufUpdater] = None
        self.skipped: list[str] = []

    # lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Updater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear_cache(self) -> None:
        """Drop the chunks kept for resuming downloads (a new target starts from nothing)."""
        self.fetcher.clear_cache()

    def close(self) -> None:
        """Close the broker connection."""
        self.reader.close()

    # metadata ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Refresh trusted metadata (root -> timestamp -> snapshot -> targets).

        Raises an UpdateDataError subclass when the repository's data is refused (the trusted
        metadata on disk stays as it was) or a TransportError when the broker failed.
        """
        self._tuf = None
        with translate_errors("refresh"):
            args = (str(self.metadata_dir), METADATA_URL)
            kwargs: dict[str, Any] = {
                "target_dir": None,
                "target_base_url": TARGETS_URL,
                "fetcher": self.fetcher,
                "config": self.config.tuf_config(),
            }
            if "bootstrap" in inspect.signature(TufUpdater.__init__).parameters:
                # trust anchor: root.json in metadata_dir (provisioned, then moved by verified rotations)
                kwargs["bootstrap"] = None
            tuf = TufUpdater(*args, **kwargs)
            tuf.refresh()
        self._tuf = tuf

    @property
    def trusted_root_version(self) -> int:
        """Version of the root this device trusts now."""
        md = Metadata.from_file(str(self.metadata_dir / "root.json"))
        return int(md.signed.version)

    def _client(self) -> TufUpdater:
        if self._tuf is None:
            self.refresh()
        assert self._tuf is not None
        return self._tuf

    def releases(self, name: Optional[str] = None) -> list[Release]:
        """Signed releases (of model ``name``, or all), oldest first. Refreshes first if needed.

        Targets whose manifest is unusable are left out and listed in ``self.skipped``.
        """
        client = self._client()
        try:
            listed = Metadata[Targets].from_file(str(self.metadata_dir / "targets.json")).signed.targets
        except (OSError, tuf_errors.RepositoryError) as exc:
            raise MalformedError(f"cannot read the trusted targets metadata: {exc}", hint=KEPT) from exc
        out: list[Release] = []
        self.skipped = []
        for path in sorted(listed):
            wanted = f"{MODELS_PREFIX}{name}/" if name is not None else MODELS_PREFIX
            if not path.startswith(wanted):
                continue
            with translate_errors("lookup"):
                info = client.get_targetinfo(path)
            if info is None:
                continue
            try:
                out.append(release_from_target(info))
            except MalformedError as exc:
                log.warning("skipping %s: %s", path, exc.message)
                self.skipped.append(f"{path}: {exc.message}")
        out.sort(key=lambda r: (r.name, version_key(r.version)))
        return out

    def release(self, name: str, version: str) -> Release:
        """The signed release ``name`` ``version``. Raises ReleaseNotFoundError."""
        for rel in self.releases(name):
            if version_key(rel.version) == version_key(version):
                return rel
        known = ", ".join(r.version for r in self.releases(name)) or "none"
        raise ReleaseNotFoundError(
            f"no signed release {name} {version} (signed versions: {known})",
            hint="check the name and version, or publish it with `edgeml publish`",
        )

    def newest(self, name: str) -> Optional[Release]:
        """The newest signed release of ``name``, or None."""
        rels = self.releases(name)
        return rels[-1] if rels else None

    @staticmethod
    def is_newer(release: Release, installed: Optional[str]) -> bool:
        """True when ``release`` is newer than the ``installed`` version (anything beats None)."""
        return is_newer(release.version, installed)

    @staticmethod
    def require_newer(release: Release, installed: Optional[str]) -> None:
        """Raise OlderVersionError unless ``release`` is newer than ``installed``."""
        if not is_newer(release.version, installed):
            raise OlderVersionError(
                f"{release.name} {release.version} is not newer than the installed {installed}",
                hint=f"a device never goes back to an older version by itself; {KEPT}",
            )

    # targets -----------------------------------------------------------------------------------
    def download(
        self,
        release: Release,
        dest: Union[Path, str],
        progress: Optional[Progress] = None,
        installed: Optional[str] = None,
    ) -> Path:
        """Fetch ``release``, verify its signed length and hashes, and write it to ``dest``
        atomically (a temp file beside it, then ``os.replace``). ``progress(done, total)`` is
        called per window of chunks. With ``installed``, refuses a version not newer.

        Raises OlderVersionError, OversizeError, IntegrityError (tampered), NotPublishedError or
        BrokerUnavailableError (retry: chunks already fetched are reused). ``dest`` is untouched
        on any error.
        """
        if installed is not None:
            self.require_newer(release, installed)
        client = self._client()
        with translate_errors("lookup"):
            info = client.get_targetinfo(release.target_path)
        if info is None:
            raise ReleaseNotFoundError(
                f"{release.target_path} is not in the trusted targets metadata",
                hint="refresh and pick a release from releases()",
            )
        if info.length > self.config.max_target_bytes:
            raise OversizeError(
                f"{info.path} is {info.length} bytes, over the {self.config.max_target_bytes}-byte limit",
                hint=f"raise UpdaterConfig.max_target_bytes if this model is expected; {KEPT}",
            )
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        self.fetcher.progress = progress
        try:
            with translate_errors("download"):
                client.download_target(info, filepath=str(tmp))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            self.fetcher.progress = None
            tmp.unlink(missing_ok=True)
        self.fetcher.clear_cache()
        return dest


def install_trusted_root(metadata_dir: Path, root_file: Path) -> None:
    """Copy a provisioned root.json into an empty metadata folder (atomically). Raises ConfigError."""
    try:
        data = root_file.read_bytes()
        Metadata.from_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot read trusted root {root_file}: {exc.strerror}", hint="provision the device") from exc
    except tuf_errors.RepositoryError as exc:
        raise ConfigError(
            f"{root_file} is not TUF root metadata: {exc}", hint="copy the repository's root.json"
        ) from exc
    metadata_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".root.", dir=metadata_dir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, metadata_dir / "root.json")


@contextlib.contextmanager
def translate_errors(step: str) -> Iterator[None]:
    """Re-raise python-tuf and transport errors as the device's typed errors."""
    try:
        yield
    except AgentError:
        raise
    except tuf_errors.DownloadHTTPError as exc:
        raise NotPublishedError(
            f"{step}: {exc}",
            hint=f"publish the repository to this broker/fleet (`edgeml repo push`); {KEPT}",
        ) from exc
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise OversizeError(f"{step}: {exc}", hint=f"refused as endless data; {KEPT}") from exc
    except tuf_errors.DownloadError as exc:
        cause = exc.__cause__
        if isinstance(cause, AgentError):
            raise cause from exc
        raise BrokerUnavailableError(f"{step}: download failed: {exc} ({cause})", hint=KEPT) from exc
    except tuf_errors.UnsignedMetadataError as exc:
        raise UntrustedMetadataError(
            f"{step}: metadata is not signed by enough trusted keys: {exc}",
            hint=f"someone without the keys altered the repository; {KEPT}",
        ) from exc
    except tuf_errors.BadVersionNumberError as exc:
        raise RollbackError(
            f"{step}: metadata version goes backwards or does not match: {exc}",
            hint=f"an older repository is being replayed or files are mixed; {KEPT}",
        ) from exc
    except tuf_errors.ExpiredMetadataError as exc:
        raise MetadataExpiredError(
            f"{step}: {exc}",
            hint=f"the publisher must re-sign (`edgeml repo refresh`); a replayed old repository looks so; {KEPT}",
        ) from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise IntegrityError(f"{step}: length or hash mismatch: {exc}", hint=f"tampered or mixed data; {KEPT}") from exc
    except tuf_errors.RepositoryError as exc:  # includes DeserializationError
        cls = MalformedError if "deserializ" in type(exc).__name__.lower() else UpdateDataError
        raise cls(f"{step}: repository data refused: {exc}", hint=KEPT) from exc
    except TransportError:
        raise
