"""``edgeml publish``: add a model variant as a signed, versioned target and push it to the broker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Callable, Optional

from device_agent.errors import ConfigError, DataError
from device_agent.protocol.manifest import ModelManifest
from device_agent.protocol.topics import check_segment
from device_agent.protocol.versions import is_newer, version_key
from device_agent.updater import chunks
from device_agent.updater.updater import encode_manifest, target_path
from edgeml.errors import ReleaseError
from edgeml.release import broker as broker_push
from edgeml.release.repo import Repository, load_json
from edgeml.settings import Settings


@dataclass
class Source:
    """A model file and its manifest, resolved from a convert folder or a variant file."""

    model: Path
    manifest: dict[str, Any]
    variant: Optional[str] = None


def resolve_source(source: Path) -> Source:
    """``CONVERT_DIR`` (uses report.json's ``selected`` variant) or ``VARIANT_FILE`` (uses the
    sibling ``<stem>.manifest.json``). Raises ReleaseError naming what is missing."""
    source = Path(source)
    if source.is_dir():
        report_path = source / "report.json"
        if not report_path.is_file():
            raise ReleaseError(
                f"{source} has no report.json",
                hint="pass the output folder of `edgeml convert`, or a variant file (.tflite/.onnx)",
            )
        report = load_json(report_path, "convert report")
        selected = report.get("selected")
        variants = {v.get("name"): v for v in report.get("variants", []) if isinstance(v, dict)}
        if not selected or selected not in variants:
            raise ReleaseError(
                f"{report_path}: no selected variant ({selected!r})",
                hint="no variant passed the accuracy gate; publish one explicitly: edgeml publish DIR/variants/<file>",
            )
        row = variants[selected]
        model = source / str(row.get("path", ""))
        manifest_path = source / str(row.get("manifest", ""))
        if not model.is_file() or not manifest_path.is_file():
            raise ReleaseError(
                f"variant {selected}: {model} or {manifest_path} is missing",
                hint="run `edgeml convert` again",
            )
        return Source(model, load_json(manifest_path, "manifest"), selected)
    if source.is_file():
        manifest_path = source.with_name(f"{source.stem}.manifest.json")
        if not manifest_path.is_file():
            raise ReleaseError(
                f"{source} has no manifest beside it ({manifest_path.name})",
                hint="publish a file written by `edgeml convert`, which writes <variant>.manifest.json next to it",
            )
        return Source(source, load_json(manifest_path, "manifest"), source.stem)
    raise ReleaseError(f"{source} does not exist", hint="pass a convert output folder or a variant file")


def prepare_manifest(raw: dict[str, Any], name: str, version: str, filename: str) -> ModelManifest:
    """Set name, version and filename and validate. Raises ReleaseError."""
    data = dict(raw)
    data.update(name=name, version=version, filename=filename)
    try:
        return ModelManifest.from_dict(data)
    except DataError as exc:
        raise ReleaseError(f"manifest is not valid: {exc.message}", hint="regenerate it with `edgeml convert`") from exc


def publish(
    settings: Settings,
    source: Path | str,
    name: Optional[str] = None,
    version: str = "",
    passphrase: Optional[str] = None,
    dry_run: bool = False,
    push: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Any]:
    """Publish a model variant as target ``models/<name>/<version>/<filename>``.

    Signs new targets, snapshot and timestamp; writes them under ``settings.repo_dir``; pushes
    to ``settings.broker_url`` under ``edgeml/<fleet>/repo`` unless ``push`` is False. Refuses a
    version not greater than the newest of that name. ``dry_run`` returns what would change and
    writes nothing. Raises ReleaseError (bad input, keys, broker).
    """
    repo = Repository(settings, passphrase=passphrase)
    repo.require()
    src = resolve_source(Path(source))
    name = name or str(src.manifest.get("name") or "")
    if not name:
        raise ReleaseError("the model has no name", hint="pass --name NAME")
    try:
        check_segment(name, "model name")
        version_key(version)
    except DataError as exc:
        raise ReleaseError(exc.message, hint=exc.hint) from exc
    except ConfigError as exc:
        raise ReleaseError(exc.message, hint=exc.hint) from exc
    newest = _check_newer(repo, name, version)
    filename = src.model.name
    try:
        check_segment(filename, "model file name")
    except ConfigError as exc:
        raise ReleaseError(exc.message, hint="rename the file: letters, digits, '_', '-' and '.' only") from exc
    manifest = prepare_manifest(src.manifest, name, version, filename)
    data = src.model.read_bytes()
    path = target_path(name, version, filename)
    status = repo.status()
    index, blobs = chunks.split(data, _chunk_bytes(settings))
    result: dict[str, Any] = {
        "name": name,
        "version": version,
        "target_path": path,
        "source": str(src.model),
        "variant": src.variant,
        "length": len(data),
        "previous": newest,
        "chunks": len(index.chunks),
        "fleet": settings.fleet,
        "dry_run": dry_run,
        "metadata": {
            role: {"from": status[role]["version"], "to": status[role]["version"] + 1}
            for role in ("targets", "snapshot", "timestamp")
        },
    }
    if dry_run:
        import hashlib

        result["sha256"] = hashlib.sha256(data).hexdigest()
        return result
    custom = {"edgeml": encode_manifest(manifest), "published_at": repo.now().astimezone(timezone.utc).isoformat()}
    with repo.locked():
        _check_newer(repo, name, version)  # again, under the lock: another publish may have won
        info = repo.add_target(path, data, custom)
    result["sha256"] = info.hashes["sha256"]
    result["status"] = repo.status()
    if push:
        result["push"] = push_repo(settings, repo, progress=progress)
    return result


def _check_newer(repo: Repository, name: str, version: str) -> Optional[str]:
    newest = repo.newest_version(name)
    if newest is not None and not is_newer(version, newest):
        raise ReleaseError(
            f"{name} {version} is not newer than the published {newest}",
            hint=f"pick a version greater than {newest} (versions never go back; roll back with a new version)",
        )
    return newest


def push_repo(
    settings: Settings,
    repo: Optional[Repository] = None,
    everything: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Push the repository to the configured broker/fleet. Raises ReleaseError."""
    repo = repo or Repository(settings)
    repo.require()
    return broker_push.push(
        repo,
        settings.broker_url,
        everything=everything,
        chunk_bytes=_chunk_bytes(settings),
        progress=progress,
        dry_run=dry_run,
    )


def _chunk_bytes(settings: Settings) -> int:
    value = settings.section("release").get("chunk_bytes", chunks.DEFAULT_CHUNK_BYTES)
    if not isinstance(value, int) or not 1024 <= value <= 1024 * 1024:
        raise ReleaseError(f"[release] chunk_bytes={value!r} must be 1024..1048576", hint="e.g. 65536")
    return value
