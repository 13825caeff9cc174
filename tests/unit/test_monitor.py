"""The pure monitoring core: right slice and feature, provenance, determinism, quiet when stable."""

from __future__ import annotations

import pickle

import numpy as np

from deploy.scenarios import Drift, Scenario
from schemas.codec import ALERT, STAT
from schemas.settings import load_settings
from streams.app import SnapshotTable, StreamsApp, state_key
from streams.config import prototypes
from streams.monitor import Monitor, MonitorConfig
from streams.state import STATE_VERSION, SliceState, encode_state

PROTOS = prototypes(load_settings())


def run(scenario: Scenario, monitor: Monitor | None = None, start: int = 0, stop: int | None = None):
    monitor = monitor or Monitor(PROTOS, MonitorConfig(stats_every_events=500))
    alerts, stats = [], []
    for offset, ev in enumerate(scenario.events()):
        if offset < start:
            continue
        if stop is not None and offset >= stop:
            break
        out = monitor.observe(ev, "drift.events", 0, offset, now_ms=0)
        alerts += out.alerts
        stats += out.stats
    return monitor, alerts, stats


def test_alert_on_the_drifted_slice_and_feature_only():
    sc = Scenario(events_per_slice=4000, drifts=(Drift("us-east", "latency_ms", 2000, size=1.5),))
    _, alerts, _ = run(sc)
    assert {(a["slice"], a["feature"]) for a in alerts} == {("us-east", "latency_ms")}
    first = alerts[0]
    onset_offset = 2000 * len(sc.slices) + sc.slices.index("us-east")
    assert first["last_offset"] >= onset_offset
    delay_in_slice_events = (first["last_offset"] - onset_offset) // len(sc.slices)
    assert delay_in_slice_events < 300
    assert first["first_offset"] < first["last_offset"]
    assert first["window_start_event_time"] <= first["window_end_event_time"]
    assert first["current"]["mean"] > first["reference"]["mean"]
    assert 0 <= first["confidence"] <= 1
    ALERT.decode(ALERT.encode(first))


def test_stable_stream_stays_quiet():
    sc = Scenario(events_per_slice=20000, drifts=(), slices=("a", "b", "c", "d", "e"))
    _, alerts, stats = run(sc)
    assert alerts == []
    assert len(stats) == 20000 * 5 * 2 // 500
    STAT.decode(STAT.encode(stats[0]))
    assert all(s["detector_state"] in ("warmup", "stable") for s in stats)


def test_same_input_same_alert_ids():
    sc = Scenario(events_per_slice=3000, drifts=(Drift("eu-west", "amount", 1500),))
    _, a1, _ = run(sc)
    _, a2, _ = run(sc)
    assert [a["alert_id"] for a in a1] == [a["alert_id"] for a in a2] and a1


def test_restored_snapshot_continues_and_skips_applied_offsets():
    """Snapshot mid-stream, restore into a new monitor, replay from before the snapshot:
    the alerts are the ones an uninterrupted run makes, with the same ids."""
    sc = Scenario(events_per_slice=3000, drifts=(Drift("eu-west", "amount", 2000),))
    _, whole, _ = run(sc)
    m1, before, _ = run(sc, stop=4500)
    blobs = {k: pickle.dumps(st) for k, st in m1.slices.items()}
    m2 = Monitor(
        PROTOS, MonitorConfig(stats_every_events=500),
        loader=lambda model, s: pickle.loads(blobs[(model, s)]),
    )
    _, after, _ = run(sc, monitor=m2, start=4000)  # overlaps the snapshot by 500 offsets
    assert [a["alert_id"] for a in before + after] == [a["alert_id"] for a in whole]


def test_missing_values_are_counted_not_fed():
    m = Monitor(PROTOS, MonitorConfig(stats_every_events=10))
    stats = []
    for i in range(10):
        ev = {"model": "m", "slice": "s", "event_time": i, "features": {"x": None if i % 2 else float(i)}}
        stats += m.observe(ev, "t", 0, i, 0).stats
    assert len(stats) == 1 and stats[0]["missing_rate"] == 0.5 and stats[0]["count"] == 10
    assert np.isclose(stats[0]["mean"], 4.0)


def test_binary_errors_go_to_the_cusum_and_regression_errors_to_adwin():
    """A 0/1 label with a score in [0, 1] is a misclassification stream; any other label an absolute error."""
    rng = np.random.default_rng(4)
    m = Monitor(PROTOS, MonitorConfig())
    alerts = []
    for i in range(6000):
        y = float(rng.normal(100, 10))
        pred = y + float(rng.normal(0, 2 if i < 3000 else 6))  # the regression model gets worse at 3000
        ev = {"model": "m", "slice": "s", "event_time": i, "features": {}, "prediction": pred, "label": y}
        alerts += m.observe(ev, "t", 0, i, 0).alerts
    perf = [a for a in alerts if a["alert_type"] == "PERFORMANCE_DRIFT"]
    assert perf and perf[0]["detector"] == "adwin" and perf[0]["detector_params"]["channel"] == "abs_error"
    assert 3000 <= perf[0]["last_offset"] < 3300 and perf[0]["feature"] is None
    st = m.slices[("m", "s")]
    assert st.error.error.seen == 0 and st.error.abs_error.seen == 6000


def test_a_snapshot_of_older_code_starts_fresh_instead_of_failing(caplog):
    app = StreamsApp.__new__(StreamsApp)  # only the loader is exercised: no Kafka clients
    st = SliceState("m", "s")
    st.version = 2
    app.table, app.restored = SnapshotTable(), 0
    app.table.put(0, state_key("m", "s"), encode_state(st))
    assert app._load("m", "s") is None and "older code" in caplog.text
    st.version = STATE_VERSION
    app.table.put(0, state_key("m", "s"), encode_state(st))
    assert app._load("m", "s").slice == "s" and app.restored == 1


def test_snapshots_are_lz4_frames_and_zlib_snapshots_of_older_code_still_read():
    import pickle
    import zlib

    from streams.state import LZ4_MAGIC, decode_state

    m = Monitor(prototypes(load_settings()), MonitorConfig())
    for i in range(500):
        m.observe({"model": "m", "slice": "s", "event_time": i, "features": {"x": float(i % 5)},
                   "categorical": {"c": "ab"[i % 2]}, "prediction": 0.3, "label": i % 2}, "t", 0, i, 0)  # fmt: skip
    st = m.slices[("m", "s")]
    blob = encode_state(st)
    assert blob[:4] == LZ4_MAGIC
    raw = pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL)
    read = [decode_state(b) for b in (blob, zlib.compress(raw, 1), raw)]  # ours, and what earlier versions wrote
    assert all(r.events == 500 and r.last_offset == st.last_offset for r in read)
    assert len({pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in read}) == 1
