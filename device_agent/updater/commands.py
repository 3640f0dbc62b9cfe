"""`edgeml-agent fetch NAME VERSION`: download one signed release, verify it, print its manifest.

Reads the broker, fleet and folders from ``--config agent.toml`` (the agent's file) or from
``--broker/--fleet/--metadata-dir``. Writes the model to ``--out`` (a file, or a folder that gets
the manifest's filename) only after python-tuf verified its length and hashes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from device_agent.errors import ConfigError
from device_agent.protocol.topics import Topics
from device_agent.updater.config import UpdaterConfig
from device_agent.updater.errors import ReleaseNotFoundError
from device_agent.updater.mqtt import TLSFiles
from device_agent.updater.updater import Updater


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``edgeml-agent`` subparsers."""
    p = sub.add_parser(
        "fetch",
        help="download and verify one signed model release",
        description="Refresh the signed update metadata from the broker, then download NAME VERSION chunk by "
        "chunk, verify its signed length and hashes, write it atomically and print the verified manifest.",
    )
    p.add_argument("name", help="model name, e.g. digits")
    p.add_argument("version", nargs="?", default=None, help="release version (default: the newest)")
    p.add_argument("--config", type=Path, default=None, help="agent.toml (broker, fleet, data_dir, TLS files)")
    p.add_argument("--broker", default=None, help="broker URL (overrides the config), e.g. mqtt://127.0.0.1:1883")
    p.add_argument("--fleet", default=None, help="fleet name (topic root edgeml/<fleet>); default 'default'")
    p.add_argument("--metadata-dir", type=Path, default=None, help="trusted metadata folder holding root.json")
    p.add_argument("--trusted-root", type=Path, default=None, help="provisioned root.json to start trust from")
    p.add_argument("--out", type=Path, default=None, help="file or folder for the model (default: current folder)")
    p.add_argument("--installed", default=None, help="refuse a release not newer than this installed version")
    p.add_argument("--max-bytes", type=int, default=None, help="refuse a model larger than this many bytes")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the broker per request")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_fetch)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "broker": None,
        "fleet": "default",
        "prefix": "edgeml",
        "metadata_dir": None,
        "cache_dir": None,
        "trusted_root": None,
        "tls": None,
        "max_bytes": None,
        "client_id": None,
    }
    if args.config is not None:
        from device_agent.agent.config import load_config

        cfg = load_config(args.config)
        out.update(
            broker=cfg.broker,
            fleet=cfg.fleet,
            prefix=cfg.topic_prefix,
            metadata_dir=cfg.metadata_dir,
            cache_dir=cfg.cache_dir,
            trusted_root=cfg.trusted_root,
            tls=TLSFiles(cfg.ca_file, cfg.cert_file, cfg.key_file, cfg.username, cfg.password),
            max_bytes=cfg.max_download_bytes,
            client_id=f"{cfg.device_id}-fetch",
        )
    for key in ("broker", "fleet", "metadata_dir", "trusted_root", "max_bytes"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    if not out["broker"]:
        raise ConfigError("no broker given", hint="pass --broker mqtt://HOST:PORT or --config agent.toml")
    if out["metadata_dir"] is None:
        raise ConfigError(
            "no metadata folder given", hint="pass --metadata-dir DIR (holding the provisioned root.json) or --config"
        )
    return out


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch, verify and write one release; print its manifest. Errors render with exit code 2."""
    s = _settings(args)
    cfg_kwargs: dict[str, Any] = {"request_timeout": args.timeout}
    if s["max_bytes"]:
        cfg_kwargs["max_target_bytes"] = int(s["max_bytes"])
    with Updater(
        s["metadata_dir"],
        s["broker"],
        Topics(s["fleet"], s["prefix"]),
        config=UpdaterConfig(**cfg_kwargs),
        cache_dir=s["cache_dir"],
        client_id=s["client_id"],
        tls=s["tls"],
        trusted_root=s["trusted_root"],
    ) as up:
        up.refresh()
        rel = up.release(args.name, args.version) if args.version else up.newest(args.name)
        if rel is None:
            raise ReleaseNotFoundError(f"no signed release of {args.name}", hint="publish one with `edgeml publish`")
        out: Path = args.out or Path.cwd()
        dest = out / rel.manifest.filename if out.is_dir() or str(out).endswith("/") else out
        progress = None if args.json else _progress
        path = up.download(rel, dest, progress=progress, installed=args.installed)
        result = {**rel.to_dict(), "path": str(path), "trusted_root_version": up.trusted_root_version}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"verified {rel.name} {rel.version}: {rel.length} bytes, sha256 {rel.hashes.get('sha256')}")
        print(f"wrote {path}")
        print("manifest:")
        print(json.dumps(rel.manifest.to_dict(), indent=2, sort_keys=True))
    return 0


def _progress(done: int, total: int) -> None:
    print(f"\rdownloading {done}/{total} bytes ({100 * done // max(total, 1)}%)", end="", file=sys.stderr)
    if done >= total:
        print(file=sys.stderr)
