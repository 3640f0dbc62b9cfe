"""`edgeml keys init|rotate|ls`, `edgeml publish`, `edgeml releases ls|show`, `edgeml repo refresh|push|status`.

Thin: options, a call into :mod:`edgeml.release`, and rendering. Progress goes to stderr so
``--json`` output stays clean.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import click

from edgeml.cli.options import Context, echo_json, json_option, pass_ctx

PASSPHRASE_HELP = (
    "Prompt for the passphrase that protects the offline (root, targets) keys. "
    "[env EDGEML_KEY_PASSPHRASE]"
)


def _passphrase(ask: bool, confirm: bool = False) -> Optional[str]:
    if os.environ.get("EDGEML_KEY_PASSPHRASE"):
        return os.environ["EDGEML_KEY_PASSPHRASE"]
    if ask:
        value: str = click.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
        return value
    return None


def _progress(label: str, enabled: bool) -> Any:
    if not enabled:
        return None
    state = {"last": -1}

    def callback(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct // 10 != state["last"] // 10 or done == total:
            click.echo(f"{label}: {done}/{total} ({pct}%)", err=True)
            state["last"] = pct

    return callback


# keys ------------------------------------------------------------------------------------------
@click.group("keys")
def keys_group() -> None:
    """Signing keys of the update repository (Ed25519).

    \b
    Root and targets keys are the offline keys: keep them (encrypted, --passphrase) away from
    the broker and the fleet server. Snapshot and timestamp keys are online keys the fleet
    controller uses to re-sign the short-lived timestamp.
    """


@keys_group.command("init")
@click.option("--threshold", type=int, default=None, help="Keys and signatures required for root and targets.")
@click.option("--root-threshold", type=int, default=None, help="Root keys/signatures required. [default 1]")
@click.option("--targets-threshold", type=int, default=None, help="Targets keys/signatures required. [default 1]")
@click.option("--passphrase", "ask", is_flag=True, help=PASSPHRASE_HELP)
@click.option("--force", is_flag=True, help="Replace existing keys and repository (devices must be re-provisioned).")
@json_option
@pass_ctx
def keys_init(
    ctx: Context,
    threshold: Optional[int],
    root_threshold: Optional[int],
    targets_threshold: Optional[int],
    ask: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Create the role keys and the initial signed root, targets, snapshot and timestamp.

    Devices are provisioned with the repository's metadata/root.json: it is their trust anchor.
    """
    from edgeml.release.keys import init_keys

    settings = ctx.settings
    settings.ensure_home()
    result = init_keys(
        settings,
        root_threshold=root_threshold or threshold or 1,
        targets_threshold=targets_threshold or threshold or 1,
        passphrase=_passphrase(ask, confirm=True),
        force=force,
    )
    if as_json:
        echo_json(result)
        return
    click.echo(f"keys in {result['keys_dir']} (private keys mode 0600)")
    for role, ids in result["keys"].items():
        enc = " encrypted" if role in result["encrypted"] else ""
        click.echo(f"  {role:<9} threshold {result['thresholds'][role]}  {', '.join(i[:12] for i in ids)}{enc}")
    click.echo(f"trusted root: {result['root']}  (copy it to each device's metadata folder)")
    click.echo("next: move the root keys offline; publish with `edgeml publish CONVERT_DIR --name N --version V`")


@keys_group.command("rotate")
@click.argument("role", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@click.option("--passphrase", "ask", is_flag=True, help=PASSPHRASE_HELP)
@click.option("--no-push", is_flag=True, help="Only sign locally; do not push to the broker.")
@json_option
@pass_ctx
def keys_rotate(ctx: Context, role: str, ask: bool, no_push: bool, as_json: bool) -> None:
    """Replace ROLE's keys with new ones in a new root version.

    The new root is signed by the old and the new root keys, so devices walk from any root they
    trust to the newest one. Old private keys move to keys/retired: destroy them once every device
    has updated.
    """
    from edgeml.release.keys import rotate_key
    from edgeml.release.publish import push_repo

    result = rotate_key(ctx.settings, role, passphrase=_passphrase(ask))
    if not no_push:
        result["push"] = push_repo(ctx.settings)
    if as_json:
        echo_json(result)
        return
    click.echo(f"rotated {role}: root is now v{result['root_version']}")
    retired = ", ".join(k[:12] for k in result["retired"])
    click.echo(f"  retired {retired}; new {', '.join(k[:12] for k in result['new'])}")
    if "push" in result:
        click.echo(f"  pushed {result['push']['messages']} message(s) to {result['push']['broker']}")


@keys_group.command("ls")
@json_option
@pass_ctx
def keys_ls(ctx: Context, as_json: bool) -> None:
    """List the keys the root trusts per role and which private keys this workstation holds."""
    from edgeml.release.repo import Repository

    repo = Repository(ctx.settings)
    repo.require()
    root = repo.root()
    held = repo.keys.held()
    out: dict[str, Any] = {
        role: {
            "threshold": root.roles[role].threshold,
            "keys": [{"keyid": k, "held": k in held.get(role, [])} for k in root.roles[role].keyids],
        }
        for role in root.roles
    }
    out["root_version"] = root.version
    if as_json:
        echo_json(out)
        return
    click.echo(f"root v{root.version}")
    for role in root.roles:
        keys = ", ".join(f"{k['keyid'][:12]}{'' if k['held'] else ' (not here)'}" for k in out[role]["keys"])
        click.echo(f"  {role:<9} threshold {out[role]['threshold']}  {keys}")


# publish ---------------------------------------------------------------------------------------
@click.command("publish")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, help="Model name. [default: the manifest's name]")
@click.option("--version", "version", required=True, help="Release version, greater than the newest published.")
@click.option("--fleet", default=None, help="Fleet to push to (topic root edgeml/<fleet>). [default: edgeml --fleet]")
@click.option("--dry-run", is_flag=True, help="Show what would change; write and push nothing.")
@click.option("--no-push", is_flag=True, help="Sign into the local repository only (`edgeml repo push` later).")
@click.option("--passphrase", "ask", is_flag=True, help=PASSPHRASE_HELP)
@json_option
@pass_ctx
def publish_cmd(
    ctx: Context,
    source: Path,
    name: Optional[str],
    version: str,
    fleet: Optional[str],
    dry_run: bool,
    no_push: bool,
    ask: bool,
    as_json: bool,
) -> None:
    """Sign and publish a model: SOURCE is an `edgeml convert` output folder (its selected variant)
    or a variant file with its <stem>.manifest.json beside it.

    \b
    The model becomes target models/<name>/<version>/<file>, its manifest rides in the signed
    metadata; targets, snapshot and timestamp are re-signed and the repository is pushed to the
    broker as retained messages (metadata, chunk index, 64 KiB content-addressed chunks).
    """
    from edgeml.release.publish import publish

    if fleet:
        ctx.fleet = fleet
    result = publish(
        ctx.settings,
        source,
        name=name,
        version=version,
        passphrase=None if dry_run else _passphrase(ask),
        dry_run=dry_run,
        push=not no_push,
        progress=_progress("push", not as_json),
    )
    if as_json:
        echo_json(result)
        return
    verb = "would publish" if dry_run else "published"
    click.echo(f"{verb} {result['name']} {result['version']} ({result['length']} bytes, {result['chunks']} chunks)")
    click.echo(f"  target  {result['target_path']}  sha256 {result['sha256'][:16]}…")
    click.echo(f"  from    {result['source']}" + (f" (variant {result['variant']})" if result["variant"] else ""))
    if result["previous"]:
        click.echo(f"  replaces newest {result['previous']}")
    for role, change in result["metadata"].items():
        click.echo(f"  {role:<9} v{change['from']} -> v{change['to']}")
    if "push" in result:
        p = result["push"]
        click.echo(f"  pushed {p['messages']} message(s), {p['bytes']} bytes to {p['broker']} ({p['topic_root']})")


# releases --------------------------------------------------------------------------------------
@click.group("releases")
def releases_group() -> None:
    """Published model releases in the local repository."""


@releases_group.command("ls")
@click.argument("name", required=False)
@json_option
@pass_ctx
def releases_ls(ctx: Context, name: Optional[str], as_json: bool) -> None:
    """List releases (of NAME, or all), oldest first."""
    from edgeml.release.repo import Repository

    rels = Repository(ctx.settings).releases(name)
    if as_json:
        echo_json({"releases": [{k: v for k, v in r.items() if k != "manifest"} for r in rels]})
        return
    if not rels:
        click.echo("no releases" + (f" of {name}" if name else "") + "; publish one with `edgeml publish`")
        return
    click.echo(f"{'name':<16} {'version':<12} {'format':<7} {'quant':<12} {'bytes':>10} {'accuracy':>9}  published")
    for r in rels:
        m = r["manifest"]
        acc = m.get("metrics", {}).get("accuracy")
        acc_s = f"{acc:.4f}" if isinstance(acc, (int, float)) else "-"
        click.echo(
            f"{r['name']:<16} {r['version']:<12} {m.get('format', '?'):<7} {m.get('quantization', '?'):<12} "
            f"{r['length']:>10} {acc_s:>9}  {str(r['published_at'] or '')[:19]}"
        )


@releases_group.command("show")
@click.argument("name")
@click.argument("version")
@json_option
@pass_ctx
def releases_show(ctx: Context, name: str, version: str, as_json: bool) -> None:
    """Show one release: target, hashes, manifest and the host's metrics."""
    from device_agent.protocol.versions import version_key
    from edgeml.errors import ReleaseError
    from edgeml.release.repo import Repository

    rels = Repository(ctx.settings).releases(name)
    match = [r for r in rels if version_key(r["version"]) == version_key(version)]
    if not match:
        known = ", ".join(r["version"] for r in rels) or "none"
        raise ReleaseError(f"no release {name} {version}", hint=f"published versions of {name}: {known}")
    r = match[0]
    if as_json:
        echo_json(r)
        return
    m = r["manifest"]
    click.echo(f"{r['name']} {r['version']}  ({r['target_path']})")
    click.echo(f"  bytes {r['length']}  sha256 {r['sha256']}")
    click.echo(f"  published {r['published_at']}")
    click.echo(f"  format {m.get('format')}  quantization {m.get('quantization')}  task {m.get('task')}")
    for t in m.get("inputs", []):
        click.echo(f"  input  {t['name']} {t['shape']} {t['dtype']}")
    for t in m.get("outputs", []):
        click.echo(f"  output {t['name']} {t['shape']} {t['dtype']}")
    if m.get("labels"):
        click.echo(f"  labels {', '.join(map(str, m['labels']))}")
    click.echo(f"  golden vectors {len(m.get('golden', []))} (atol {m.get('golden_atol')})")
    for k, v in sorted(m.get("metrics", {}).items()):
        if isinstance(v, (int, float, str)) or v is None:
            click.echo(f"  metric {k} = {v}")
    if m.get("lineage"):
        flat = [f"{k}={v}" for k, v in sorted(m["lineage"].items()) if not isinstance(v, (dict, list))]
        click.echo(f"  lineage {', '.join(flat)}")


@releases_group.command("rm")
@click.argument("name")
@click.argument("version")
@click.option("--passphrase", "ask", is_flag=True, help=PASSPHRASE_HELP)
@click.option("--no-push", is_flag=True, help="Only sign locally; do not push to the broker.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_ctx
def releases_rm(ctx: Context, name: str, version: str, ask: bool, no_push: bool, yes: bool, as_json: bool) -> None:
    """Take NAME VERSION out of the signed targets: devices can no longer fetch it (a device running
    it keeps running it). Keeps the targets metadata every device downloads small. Needs the
    targets key. The version number stays used: the next publish must be greater."""
    from device_agent.protocol.versions import version_key
    from edgeml.errors import ReleaseError
    from edgeml.release.publish import push_repo
    from edgeml.release.repo import Repository

    repo = Repository(ctx.settings, passphrase=_passphrase(ask))
    rels = [r for r in repo.releases(name) if version_key(r["version"]) == version_key(version)]
    if not rels:
        known = ", ".join(r["version"] for r in repo.releases(name)) or "none"
        raise ReleaseError(f"no release {name} {version}", hint=f"published versions of {name}: {known}")
    if not yes and not as_json:
        click.confirm(f"remove {rels[0]['target_path']} from the signed targets?", abort=True, err=True)
    status = repo.remove_target(rels[0]["target_path"])
    out: dict[str, Any] = {"removed": rels[0]["target_path"], "status": status}
    if not no_push:
        out["push"] = push_repo(ctx.settings, repo)
    if as_json:
        echo_json(out)
        return
    click.echo(f"removed {out['removed']}; targets v{status['targets']['version']}")


# repo ------------------------------------------------------------------------------------------
@click.group("repo")
def repo_group() -> None:
    """The local update repository and its copy on the broker."""


@repo_group.command("refresh")
@click.option("--no-push", is_flag=True, help="Only sign locally; do not push to the broker.")
@json_option
@pass_ctx
def repo_refresh(ctx: Context, no_push: bool, as_json: bool) -> None:
    """Re-sign the timestamp (and snapshot when it nears expiry) so devices keep updating.

    The timestamp expires soon by design ([release] timestamp_expiry, default 1d): a device that
    only sees an expired one refuses it (freeze attack). Run this from cron or let the fleet
    controller do it.
    """
    from edgeml.release.publish import push_repo
    from edgeml.release.repo import Repository

    repo = Repository(ctx.settings)
    status = repo.refresh_timestamp()
    out: dict[str, Any] = {"status": status}
    if not no_push:
        out["push"] = push_repo(ctx.settings, repo)
    if as_json:
        echo_json(out)
        return
    click.echo(f"timestamp v{status['timestamp']['version']} expires {status['timestamp']['expires']}")
    click.echo(f"snapshot  v{status['snapshot']['version']} expires {status['snapshot']['expires']}")
    if "push" in out:
        click.echo(f"pushed {out['push']['messages']} message(s) to {out['push']['broker']}")
    _warn(status)


@repo_group.command("resign")
@click.argument("role", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@click.option("--passphrase", "ask", is_flag=True, help=PASSPHRASE_HELP)
@click.option("--no-push", is_flag=True, help="Only sign locally; do not push to the broker.")
@json_option
@pass_ctx
def repo_resign(ctx: Context, role: str, ask: bool, no_push: bool, as_json: bool) -> None:
    """Sign a new version of ROLE with a fresh expiry (nothing else changes).

    Root and targets expire after a year by default ([release] root_expiry, targets_expiry):
    re-sign them before that with the offline keys; `edgeml repo status` warns a month ahead.
    """
    from edgeml.release.publish import push_repo
    from edgeml.release.repo import Repository

    repo = Repository(ctx.settings, passphrase=_passphrase(ask))
    status = repo.resign(role)
    out: dict[str, Any] = {"status": status}
    if not no_push:
        out["push"] = push_repo(ctx.settings, repo)
    if as_json:
        echo_json(out)
        return
    click.echo(f"{role} v{status[role]['version']} expires {status[role]['expires']}")
    _warn(status)


def _warn(status: dict[str, Any]) -> None:
    for w in status.get("warnings", []):
        click.secho(f"warning: {w}", fg="yellow", err=True)


@repo_group.command("push")
@click.option("--all", "everything", is_flag=True, help="Re-send everything (the broker lost its retained messages).")
@click.option("--dry-run", is_flag=True, help="Count what would be sent.")
@json_option
@pass_ctx
def repo_push(ctx: Context, everything: bool, dry_run: bool, as_json: bool) -> None:
    """Push the repository to the broker as retained messages (only what the broker lacks)."""
    from edgeml.release.publish import push_repo

    out = push_repo(ctx.settings, everything=everything, dry_run=dry_run, progress=_progress("push", not as_json))
    if as_json:
        echo_json(out)
        return
    verb = "would push" if dry_run else "pushed"
    click.echo(f"{verb} {out['messages']} message(s), {out['bytes']} bytes to {out['broker']} ({out['topic_root']});"
               f" {out['skipped']} already there")


@repo_group.command("status")
@json_option
@pass_ctx
def repo_status(ctx: Context, as_json: bool) -> None:
    """Versions and expiry of root, targets, snapshot and timestamp."""
    from edgeml.release.repo import Repository

    status = Repository(ctx.settings).status()
    if as_json:
        echo_json(status)
        return
    for role in ("root", "targets", "snapshot", "timestamp"):
        click.echo(f"{role:<9} v{status[role]['version']:<4} expires {status[role]['expires']}")
    _warn(status)


def register(main: click.Group) -> None:
    """Add this module's commands to ``main``."""
    main.add_command(keys_group)
    main.add_command(publish_cmd)
    main.add_command(releases_group)
    main.add_command(repo_group)
