"""The release CLI: `edgeml keys`, `edgeml publish`, `edgeml releases`, `edgeml repo`, and the
device's `edgeml-agent fetch` — including the must-show flow on a converted digits model."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from device_agent import cli as agent_cli
from edgeml.cli import run_cli
from tests.brokers import MosquittoBroker
from tests.release.helpers import make_variant


def edgeml(capsys: pytest.CaptureFixture[str], home: Path, broker: str, *args: str) -> tuple[int, str, str]:
    """Run the edgeml CLI in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rv = run_cli(["--home", str(home), "--broker", broker, *args])
        code = rv if isinstance(rv, int) else 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def fetch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = agent_cli.main(["fetch", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_must_show_keys_publish_digits_and_device_fetch(
    digits_convert_dir: Path, broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, out, err = edgeml(capsys, home, broker.url, "keys", "init")
    assert code == 0, err
    assert "trusted root" in out
    code, out, err = edgeml(
        capsys, home, broker.url, "publish", str(digits_convert_dir), "--name", "digits", "--version", "1.0.0", "--json"
    )
    assert code == 0, err
    published = json.loads(out)
    report = json.loads((digits_convert_dir / "report.json").read_text())
    row = next(v for v in report["variants"] if v["name"] == report["selected"])
    variant_file = digits_convert_dir / row["path"]
    assert published["variant"] == report["selected"] and published["length"] == variant_file.stat().st_size
    assert published["push"]["messages"] > 0

    device = tmp_path / "device"
    (device / "metadata").mkdir(parents=True)
    (device / "metadata" / "root.json").write_bytes((home / "repository" / "metadata" / "root.json").read_bytes())
    code, out, err = fetch(
        capsys,
        "digits",
        "1.0.0",
        "--broker",
        broker.url,
        "--metadata-dir",
        str(device / "metadata"),
        "--out",
        str(device) + "/",
    )
    assert code == 0, err
    assert "verified digits 1.0.0" in out and '"golden"' in out  # the verified manifest is printed
    fetched = device / variant_file.name
    assert fetched.read_bytes() == variant_file.read_bytes()

    code, out, _ = fetch(
        capsys,
        "digits",
        "--broker",
        broker.url,
        "--metadata-dir",
        str(device / "metadata"),
        "--out",
        str(device / "again.bin"),
        "--json",
    )
    got = json.loads(out)
    variant_manifest = json.loads((digits_convert_dir / row["manifest"]).read_text())
    assert got["manifest"]["golden"] == variant_manifest["golden"]  # floats survive signing exactly
    assert got["manifest"]["reference"] == variant_manifest["reference"]
    assert (got["manifest"]["name"], got["manifest"]["version"]) == ("digits", "1.0.0")

    code, out, _ = edgeml(capsys, home, broker.url, "releases", "show", "digits", "1.0.0", "--json")
    shown = json.loads(out)
    assert shown["sha256"] == got["hashes"]["sha256"] and shown["manifest"]["metrics"] == variant_manifest["metrics"]


def test_keys_init_modes_passphrase_and_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("EDGEML_KEY_PASSPHRASE", "correct horse")
    code, out, err = edgeml(capsys, home, "mqtt://127.0.0.1:9", "keys", "init", "--threshold", "2", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["thresholds"] == {"root": 2, "targets": 2, "snapshot": 1, "timestamp": 1}
    assert info["encrypted"] == ["root", "targets"]
    for pem in (home / "keys").rglob("*.pem"):
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
        encrypted = b"ENCRYPTED" in pem.read_bytes()
        assert encrypted == (pem.parent.name in ("root", "targets")), pem
    assert len(list((home / "keys" / "root").glob("*.pem"))) == 2

    code, _, err = edgeml(capsys, home, "mqtt://127.0.0.1:9", "keys", "init")
    assert code == 2 and "already exist" in err and "hint:" in err

    model = make_variant(tmp_path / "v")
    monkeypatch.delenv("EDGEML_KEY_PASSPHRASE")
    code, _, err = edgeml(capsys, home, "mqtt://127.0.0.1:9", "publish", str(model), "--version", "1", "--no-push")
    assert code == 2 and "passphrase" in err and "Traceback" not in err
    monkeypatch.setenv("EDGEML_KEY_PASSPHRASE", "wrong")
    code, _, err = edgeml(capsys, home, "mqtt://127.0.0.1:9", "publish", str(model), "--version", "1", "--no-push")
    assert code == 2 and "wrong passphrase" in err
    monkeypatch.setenv("EDGEML_KEY_PASSPHRASE", "correct horse")
    code, out, err = edgeml(capsys, home, "mqtt://127.0.0.1:9", "publish", str(model), "--version", "1", "--no-push")
    assert code == 0, err


def test_publish_dry_run_version_order_and_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, url = tmp_path / "home", "mqtt://127.0.0.1:9"
    assert edgeml(capsys, home, url, "keys", "init")[0] == 0
    model = make_variant(tmp_path / "v")
    code, out, err = edgeml(capsys, home, url, "publish", str(model), "--version", "1.0.0", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["metadata"]["targets"] == {"from": 1, "to": 2} and plan["chunks"] == 4
    code, out, _ = edgeml(capsys, home, url, "releases", "ls", "--json")
    assert json.loads(out) == {"releases": []}, "a dry run writes nothing"

    assert edgeml(capsys, home, url, "publish", str(model), "--version", "1.0.0", "--no-push")[0] == 0
    for older in ("1.0.0", "0.9", "1.0.0-rc1"):
        code, _, err = edgeml(capsys, home, url, "publish", str(model), "--version", older, "--no-push")
        assert code == 2 and "not newer than the published 1.0.0" in err
    code, _, err = edgeml(capsys, home, url, "publish", str(model), "--version", "v2", "--no-push")
    assert code == 2 and "not a dotted version" in err

    # a convert folder: report.json's selected variant and its manifest
    conv = tmp_path / "conv"
    a = make_variant(conv / "variants", name="tiny", size=5000, seed=1)
    b = make_variant(conv / "variants", name="other", size=7000, seed=2)
    report: dict[str, Any] = {
        "selected": "other-fp32",
        "variants": [
            {"name": "tiny-fp32", "path": f"variants/{a.name}", "manifest": "variants/tiny-fp32.manifest.json"},
            {"name": "other-fp32", "path": f"variants/{b.name}", "manifest": "variants/other-fp32.manifest.json"},
        ],
    }
    (conv / "report.json").write_text(json.dumps(report))
    code, out, err = edgeml(
        capsys, home, url, "publish", str(conv), "--name", "tiny", "--version", "2", "--no-push", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["length"] == 7000 and json.loads(out)["target_path"] == "models/tiny/2/other-fp32.tflite"
    report["selected"] = None
    (conv / "report.json").write_text(json.dumps(report))
    code, _, err = edgeml(capsys, home, url, "publish", str(conv), "--version", "3", "--no-push")
    assert code == 2 and "no selected variant" in err
    os.remove(conv / "variants" / "tiny-fp32.manifest.json")
    code, _, err = edgeml(capsys, home, url, "publish", str(a), "--version", "3", "--no-push")
    assert code == 2 and "no manifest beside it" in err

    code, out, _ = edgeml(capsys, home, url, "releases", "ls", "tiny", "--json")
    assert [r["version"] for r in json.loads(out)["releases"]] == ["1.0.0", "2"]
    code, out, _ = edgeml(capsys, home, url, "releases", "ls")
    assert "1.0.0" in out and "0.9000" in out
    code, _, err = edgeml(capsys, home, url, "releases", "show", "tiny", "7")
    assert code == 2 and "published versions of tiny: 1.0.0, 2" in err


def test_publish_with_broker_down_keeps_release_and_push_later(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert edgeml(capsys, home, broker.url, "keys", "init")[0] == 0
    model = make_variant(tmp_path / "v")
    broker.stop()
    code, _, err = edgeml(capsys, home, broker.url, "publish", str(model), "--version", "1")
    assert code == 2 and "cannot reach broker" in err and "edgeml repo push" in err
    broker.start()
    code, out, err = edgeml(capsys, home, broker.url, "repo", "push", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["messages"] >= 7 and first["skipped"] == 0
    code, out, _ = edgeml(capsys, home, broker.url, "repo", "push", "--json")
    assert json.loads(out)["messages"] == 0, "what the broker holds is not sent again"

    code, out, _ = edgeml(capsys, home, broker.url, "repo", "refresh", "--json")
    refreshed = json.loads(out)
    assert refreshed["status"]["timestamp"]["version"] == 3 and refreshed["push"]["messages"] == 1


def test_repo_refresh_lets_a_device_move_past_expiry(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "edgeml.toml").write_text('[release]\ntimestamp_expiry = "2s"\n')
    assert edgeml(capsys, home, broker.url, "keys", "init")[0] == 0
    model = make_variant(tmp_path / "v")
    assert edgeml(capsys, home, broker.url, "publish", str(model), "--version", "1")[0] == 0
    code, out, _ = edgeml(capsys, home, broker.url, "repo", "status", "--json")
    status = json.loads(out)
    assert status["timestamp"]["version"] == 2
    meta = tmp_path / "dev"
    meta.mkdir()
    (meta / "root.json").write_bytes((home / "repository" / "metadata" / "root.json").read_bytes())
    import time

    time.sleep(2.2)
    code, _, err = fetch(capsys, "tiny", "--broker", broker.url, "--metadata-dir", str(meta), "--out", str(tmp_path))
    assert code == 2 and "expired" in err and "edgeml repo refresh" in err
    assert edgeml(capsys, home, broker.url, "repo", "refresh")[0] == 0
    code, _, err = fetch(capsys, "tiny", "--broker", broker.url, "--metadata-dir", str(meta), "--out", str(tmp_path))
    assert code == 0, err


def test_keys_rotate_targets_and_device_follows(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert edgeml(capsys, home, broker.url, "keys", "init")[0] == 0
    meta = tmp_path / "dev"
    meta.mkdir()
    (meta / "root.json").write_bytes((home / "repository" / "metadata" / "root.json").read_bytes())
    old = {p.name for p in (home / "keys" / "targets").glob("*.pem")}
    code, out, err = edgeml(capsys, home, broker.url, "keys", "rotate", "targets", "--json")
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["root_version"] == 2 and {f"{k}.pem" for k in rotated["retired"]} == old
    assert {p.name for p in (home / "keys" / "retired").glob("*.pem")} == old
    code, out, _ = edgeml(capsys, home, broker.url, "keys", "ls", "--json")
    assert json.loads(out)["targets"]["keys"][0]["held"] is True
    model = make_variant(tmp_path / "v")
    assert edgeml(capsys, home, broker.url, "publish", str(model), "--version", "1")[0] == 0
    code, out, err = fetch(
        capsys,
        "tiny",
        "1",
        "--broker",
        broker.url,
        "--metadata-dir",
        str(meta),
        "--out",
        str(tmp_path / "m.bin"),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["trusted_root_version"] == 2
    assert (tmp_path / "m.bin").read_bytes() == model.read_bytes()


def test_push_resends_everything_when_the_broker_lost_its_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.brokers import MosquittoBroker as Broker

    home = tmp_path / "home"
    first = Broker(tmp_path / "b1")
    first.start()
    try:
        assert edgeml(capsys, home, first.url, "keys", "init")[0] == 0
        model = make_variant(tmp_path / "v")
        assert edgeml(capsys, home, first.url, "publish", str(model), "--version", "1")[0] == 0
        port = first.port
    finally:
        first.stop()
    empty = Broker(tmp_path / "b2", port=port)  # same address, empty retained store
    empty.start()
    try:
        code, out, err = edgeml(capsys, home, empty.url, "repo", "push", "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["resent_all"] is True and result["skipped"] == 0 and result["messages"] >= 7
        meta = tmp_path / "dev"
        meta.mkdir()
        (meta / "root.json").write_bytes((home / "repository" / "metadata" / "root.json").read_bytes())
        code, _, err = fetch(
            capsys, "tiny", "1", "--broker", empty.url, "--metadata-dir", str(meta), "--out", str(tmp_path / "m.bin")
        )
        assert code == 0, err
        assert (tmp_path / "m.bin").read_bytes() == model.read_bytes()
    finally:
        empty.stop()


def test_agent_fetch_with_agent_config(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert edgeml(capsys, home, broker.url, "--fleet", "plant-a", "keys", "init")[0] == 0
    model = make_variant(tmp_path / "v")
    assert edgeml(capsys, home, broker.url, "--fleet", "plant-a", "publish", str(model), "--version", "3")[0] == 0
    root = home / "repository" / "metadata" / "root.json"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'device_id = "dev-007"\nfleet = "plant-a"\nbroker = "{broker.url}"\ndata_dir = "data"\n'
        f'trusted_root = "{root}"\n'
    )
    code, out, err = fetch(capsys, "tiny", "--config", str(cfg), "--out", str(tmp_path / "m.bin"), "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == "3"
    assert (tmp_path / "data" / "tuf" / "metadata" / "root.json").is_file()  # trust installed from the config
    assert (tmp_path / "m.bin").read_bytes() == model.read_bytes()
    code, _, err = fetch(capsys, "tiny", "--config", str(cfg), "--fleet", "other", "--out", str(tmp_path / "x.bin"))
    assert code == 2 and "not retained on the broker" in err and not (tmp_path / "x.bin").exists()


def test_offline_root_keys_are_needed_to_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, url = tmp_path / "home", "mqtt://127.0.0.1:9"
    assert edgeml(capsys, home, url, "keys", "init")[0] == 0
    offline = tmp_path / "usb-stick"
    (home / "keys" / "root").rename(offline)  # the root key goes offline
    code, out, _ = edgeml(capsys, home, url, "keys", "ls")
    assert code == 0 and "(not here)" in out
    code, _, err = edgeml(capsys, home, url, "keys", "rotate", "targets", "--no-push")
    assert code == 2 and "needs 1 root key(s); 0 available" in err and "offline root keys" in err
    assert len(list((home / "keys" / "targets").glob("*.pem"))) == 1, "no half-made rotation left behind"
    model = make_variant(tmp_path / "v")
    code, _, err = edgeml(capsys, home, url, "publish", str(model), "--version", "1", "--no-push")
    assert code == 0, err  # publishing needs targets, snapshot and timestamp keys only
    offline.rename(home / "keys" / "root")
    code, out, err = edgeml(capsys, home, url, "keys", "rotate", "targets", "--no-push", "--json")
    assert code == 0, err
    assert json.loads(out)["root_version"] == 2


def test_releases_rm_and_broker_pruning(
    broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from device_agent.protocol.topics import Topics
    from device_agent.updater.chunks import split
    from tests.release.helpers import Raw

    home = tmp_path / "home"
    assert edgeml(capsys, home, broker.url, "keys", "init")[0] == 0
    models = {v: make_variant(tmp_path / f"v{v}", size=70_000, seed=int(v)) for v in ("1", "2", "3")}
    for v, model in models.items():
        assert edgeml(capsys, home, broker.url, "publish", str(model), "--version", v)[0] == 0
    raw = Raw(broker.host, broker.port)
    topics = Topics()
    try:
        # targets v4 and v3 stay on the broker, v2 (and v1) are gone; every root version stays
        assert raw.get(topics.repo_metadata("4.targets.json"), 1) is not None
        assert raw.get(topics.repo_metadata("3.targets.json"), 1) is not None
        assert raw.get(topics.repo_metadata("2.targets.json"), 0.3) is None
        assert raw.get(topics.repo_metadata("2.snapshot.json"), 0.3) is None
        assert raw.get(topics.repo_metadata("1.root.json"), 1) is not None

        code, out, err = edgeml(capsys, home, broker.url, "releases", "rm", "tiny", "1", "--json")
        assert code == 0, err
        assert json.loads(out)["push"]["pruned"] >= 3  # 2 chunks + index of release 1, old metadata
        index, _ = split(models["1"].read_bytes())
        assert raw.get(topics.repo_chunk(index.chunks[0].digest), 0.3) is None
        assert raw.get(topics.repo_target_index("models/tiny/1/tiny-fp32.tflite"), 0.3) is None
    finally:
        raw.close()
    code, out, _ = edgeml(capsys, home, broker.url, "releases", "ls", "--json")
    assert [r["version"] for r in json.loads(out)["releases"]] == ["2", "3"]
    meta = tmp_path / "dev"
    meta.mkdir()
    (meta / "root.json").write_bytes((home / "repository" / "metadata" / "root.json").read_bytes())
    code, _, err = fetch(
        capsys, "tiny", "1", "--broker", broker.url, "--metadata-dir", str(meta), "--out", str(tmp_path)
    )
    assert code == 2 and "no signed release tiny 1 (signed versions: 2, 3)" in err
    code, _, err = fetch(
        capsys, "tiny", "2", "--broker", broker.url, "--metadata-dir", str(meta), "--out", str(tmp_path / "m2")
    )
    assert code == 0, err
    assert (tmp_path / "m2").read_bytes() == models["2"].read_bytes()
    code, _, err = edgeml(capsys, home, broker.url, "publish", str(models["1"]), "--version", "1", "--no-push")
    assert code == 2 and "not newer than the published 3" in err
    code, _, _ = edgeml(capsys, home, broker.url, "releases", "rm", "tiny", "3", "--yes", "--no-push")
    assert code == 0
    code, _, err = edgeml(capsys, home, broker.url, "publish", str(models["1"]), "--version", "3", "--no-push")
    assert code == 2 and "not newer than the published 3" in err, "a removed version number is not reused"
