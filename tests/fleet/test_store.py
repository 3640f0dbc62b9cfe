"""The store, the same tests on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import time

import pytest

from edgeml.errors import FleetError
from edgeml.fleet.collector import event_row, state_row, telemetry_row
from edgeml.fleet.rollout import new_rollout
from edgeml.fleet.store import Store
from tests.fleet.helpers import event, state, telemetry


def t_row(device: str, seq: int, **kw):  # type: ignore[no-untyped-def]
    return telemetry_row(device, telemetry(device, seq, **kw).to_json(), time.time())


def test_batches_drop_duplicates_by_device_and_seq(store: Store) -> None:
    rows = [t_row("a", 1), t_row("a", 2), t_row("b", 1)]
    assert store.write_batch(telemetry=rows) == (3, 0)
    # redelivery of a and a duplicate inside one batch: only a/3 is new
    assert store.write_batch(telemetry=[t_row("a", 2), t_row("a", 3), t_row("a", 3)]) == (1, 0)
    assert store.telemetry_count() == 4
    got = store.telemetry_rows(model="digits", device_id="a")
    assert [r["seq"] for r in got] == [1, 2, 3]
    assert got[0]["requests"] == 100 and got[0]["p95_ms"] == pytest.approx(2.0, rel=0.3)
    assert got[0]["psi_max"] == pytest.approx(0.02)
    later = store.telemetry_rows(after_id=got[0]["id"], device_id="a")
    assert [r["seq"] for r in later] == [2, 3]


def test_states_last_will_and_last_seen(store: Store) -> None:
    now = time.time()
    store.write_batch(states=[state_row("a", state("a", "1.0.0", group="g1").to_json(), now)])
    store.write_batch(seen={"a": now + 5, "ghost": now + 5})
    d = store.device("a")
    assert d and d["online"] and d["version"] == "1.0.0" and d["group_name"] == "g1"
    assert d["last_seen"] == pytest.approx(now + 5)
    # a minimal last will keeps what we knew
    store.write_batch(states=[state_row("a", b'{"schema":"state/1.0","online":false}', now + 6)])
    d = store.device("a")
    assert d and not d["online"] and d["version"] == "1.0.0"
    views = {v.device_id: v for v in store.device_views()}
    assert "ghost" not in views and views["a"].online is False
    store.set_desired([{"device_id": "a", "model": "digits", "version": "2.0.0", "rollout": "r", "at": now}])
    assert store.device("a")["desired_version"] == "2.0.0"  # type: ignore[index]


def test_events_unique_and_filtered(store: Store) -> None:
    now = time.time()
    rows = [
        event_row("a", event("a", 1, "start").to_json(), now),
        event_row("a", event("a", 2, "probation_failed", to_state="rolled_back").to_json(), now + 1),
    ]
    assert store.write_batch(events=rows) == (0, 2)
    assert store.write_batch(events=rows) == (0, 0)
    got = store.events(model="digits", version="2.0.0")
    assert [e["event"] for e in got] == ["probation_failed", "start"]  # newest first
    assert store.events(device_id="zzz") == []


def test_rollouts_one_active_per_model_and_round_trip(store: Store) -> None:
    r = new_rollout("digits", "2.0.0", "1.0.0", now=100.0, soak=0)
    store.create_rollout(r)
    with pytest.raises(FleetError) as info:
        store.create_rollout(new_rollout("digits", "3.0.0", "1.0.0", now=101.0))
    assert r.id in info.value.message and info.value.hint
    store.create_rollout(new_rollout("other", "3.0.0", None, now=102.0))
    r.state, r.stage_index, r.cuts = "halted", 1, [0.1, 0.5]
    store.save_rollout(r)
    back = store.rollout(r.id)
    assert back == r
    assert store.find_rollout("digits").id == r.id
    assert [x.model for x in store.rollouts()] == ["other", "digits"]
    assert store.rollouts(states=("running",))[0].model == "other"
    with pytest.raises(FleetError):
        store.find_rollout("nope")
    # the halted one no longer blocks a new rollout of the model
    store.create_rollout(new_rollout("digits", "3.0.0", "1.0.0", now=103.0))


def test_commands_alerts_meta(store: Store) -> None:
    cid = store.add_command("r1", "pause")
    assert [c["command"] for c in store.pending_commands()] == ["pause"]
    store.mark_command(cid, "ok: paused")
    assert store.pending_commands() == [] and store.command(cid)["result"] == "ok: paused"  # type: ignore[index]
    store.add_alert("latency_spike", "p95 high", "digits", "2.0.0", 12.5, ("log", "webhook"))
    a = store.alerts()[0]
    assert a["rule"] == "latency_spike" and a["value"] == 12.5 and a["actions"] == "log,webhook"
    assert store.get_meta("k") is None
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")
    assert store.get_meta("k") == "v2"


def test_data_survives_reopening(store: Store) -> None:
    store.write_batch(telemetry=[t_row("a", 1)])
    again = Store(store.url, prefix=store.prefix)
    try:
        assert again.telemetry_count() == 1
    finally:
        again.close()


def test_bad_urls_are_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FleetError) as info:
        Store("mysql://x/y")
    assert "not supported" in info.value.message
    with pytest.raises(FleetError) as info:
        Store("postgresql+psycopg://nobody:wrong@127.0.0.1:1/none")
    assert "cannot open the fleet store" in info.value.message and "wrong" not in info.value.message


def test_latest_telemetry_and_series_views(store: Store) -> None:
    from edgeml.fleet import views

    now = time.time()
    rows = [t_row("a", 1, ms=2.0, end=now - 30), t_row("a", 2, ms=8.0, end=now - 5),
            t_row("b", 1, version="2.0.0", ms=4.0, end=now - 5), t_row("c", 1, end=now - 500)]
    store.write_batch(telemetry=rows)
    latest = store.latest_telemetry(now - 60)
    assert set(latest) == {"a", "b"} and latest["a"]["p95_ms"] == pytest.approx(8.0, rel=0.3)
    direct = views.series(store, 120, now)
    cached = views.SeriesCache(store).series(120, now)
    for got in (direct, cached):
        by = {(s["model"], s["version"]): s["points"] for s in got}
        assert set(by) == {("digits", "1.0.0"), ("digits", "2.0.0")}
        assert sum(p["requests"] for p in by[("digits", "1.0.0")]) == 200
        assert max(p["p95_ms"] for p in by[("digits", "1.0.0")]) == pytest.approx(8.0, rel=0.3)


def test_drift_cache_judges_merged_windows_not_one_noisy_window(store: Store) -> None:
    from device_agent.protocol import Histogram
    from edgeml.fleet import views

    now = time.time()

    def window(device: str, seq: int, counts: list[int]) -> dict:  # type: ignore[type-arg]
        t = telemetry(device, seq, end=now - 10 + seq * 0.1)
        t.summary.features = [Histogram([0.5], counts)]
        t.psi = [0.9]  # what one small window's PSI looks like: noise
        return telemetry_row(device, t.to_json(), now)

    rows = [window(f"steady{k}", i, [26, 24]) for i in range(10) for k in range(5)]
    rows += [window("drifted", i, [48, 2]) for i in range(10)]
    rows += [window("new", 0, [3, 2])]
    store.write_batch(telemetry=rows)
    # without a manifest the other devices are the reference
    got = views.DriftCache(store, window_s=60).values(now)
    assert got["drifted"][1] is True and got["drifted"][0] > 0.2  # type: ignore[operator]
    assert not any(got[f"steady{k}"][1] for k in range(5))
    assert got["new"] == (None, False)  # five samples: no verdict
    # with the release's reference profile
    from device_agent.protocol import FeatureProfile, ModelManifest, ReferenceProfile, TensorSpec

    m = ModelManifest(name="digits", inputs=[TensorSpec("x", [-1, 1])], outputs=[TensorSpec("y", [-1, 2])],
                      reference=ReferenceProfile([FeatureProfile("f", [0.5], [0.5, 0.5])]))
    got = views.DriftCache(store, lambda name, version: m, window_s=60).values(now)
    assert got["drifted"][1] is True and got["steady0"][1] is False


def test_series_drift_is_judged_on_merged_windows_against_the_reference(store: Store) -> None:
    from device_agent.protocol import FeatureProfile, Histogram
    from edgeml.fleet import views

    now = time.time()

    def window(device: str, seq: int, version: str, counts: list[int]) -> dict:  # type: ignore[type-arg]
        t = telemetry(device, seq, version=version, end=now - 10 + seq * 0.1)
        t.summary.features = [Histogram([0.5], counts)]
        t.psi = [0.9]  # one small window's own PSI: noise
        return telemetry_row(device, t.to_json(), now)

    rows = [window(f"d{k}", i, "1.0.0", [26, 24]) for i in range(10) for k in range(3)]
    rows += [window(f"e{k}", i, "2.0.0", [48, 2]) for i in range(10) for k in range(3)]
    store.write_batch(telemetry=rows)
    ref = FeatureProfile("f", [0.5], [0.5, 0.5]).freqs

    def reference(model: str, version: str) -> list[list[float]]:
        return [ref]

    for got in (views.series(store, 120, now, reference=reference),
                views.SeriesCache(store, reference=reference).series(120, now)):
        by = {s["version"]: [p["psi_max"] for p in s["points"] if p["psi_max"] is not None] for s in got}
        assert by["1.0.0"] and max(by["1.0.0"]) < 0.05, by  # steady inputs: the noisy 0.9 is not shown
        assert by["2.0.0"] and min(by["2.0.0"]) > 0.2, by  # drifted inputs stand out
    # without a reference the devices' own window PSI is what there is
    plain = views.series(store, 120, now)
    assert max(p["psi_max"] for s in plain for p in s["points"]) == pytest.approx(0.9)
