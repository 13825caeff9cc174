"""Scoring of the detection bench on hand-made alert lists (pure: no Kafka, no Evidently)."""

from __future__ import annotations

import math

import pytest

from deploy.bench_detect import build_suite, slice_times
from deploy.detect_scoring import (
    check_targets,
    evidently_alerts,
    format_report,
    score_alerts,
    stable_pair_events,
)
from deploy.scenarios import ALERT_FOR_KIND, KINDS, Drift, Scenario
from deploy.throughput_report import rate_from_commits

N = 1000
SLICES = ("s0", "s1", "s2", "s3")


@pytest.fixture(scope="module")
def sc() -> Scenario:
    return Scenario(
        slices=SLICES,
        events_per_slice=N,
        drifts=(
            Drift("s0", "amount", 400, "mean"),
            Drift("s1", None, 500, "error_rate"),
            Drift("s2", "label", 600, "label_shift"),
        ),
    )


def alert(sc: Scenario, slice_: str, feature, alert_type: str, index: int, alert_id: str | None = None) -> dict:
    a = {
        "slice": slice_,
        "feature": feature,
        "alert_type": alert_type,
        "window_end_event_time": int(sc.event_time(slice_, index)),
    }
    if alert_id is not None:
        a["alert_id"] = alert_id
    return a


def score(sc: Scenario, alerts: list[dict]) -> dict:
    return score_alerts(sc.expected_alerts(), alerts, slice_times(sc), sc.channels())


def test_delays_are_events_of_the_slice_from_onset_to_window_end(sc):
    r = score(
        sc,
        [
            alert(sc, "s0", "amount", "DATA_DRIFT", 400 + 37),
            alert(sc, "s1", None, "PERFORMANCE_DRIFT", 500 + 250),
            alert(sc, "s2", "label", "LABEL_DRIFT", 600),  # at the onset event itself: delay 0
        ],
    )
    k = r["kinds"]
    assert k["mean"]["detected"] == 1 and k["mean"]["median_delay"] == 37
    assert k["error_rate"]["median_delay"] == 250 and k["error_rate"]["alert_type"] == "PERFORMANCE_DRIFT"
    assert k["label_shift"]["median_delay"] == 0
    assert all(v["missed"] == 0 for v in k.values())
    assert r["false_alarms"] == 0 and r["false_alarms_per_million"] == 0


def test_window_end_between_two_events_counts_the_last_event_before_it(sc):
    a = alert(sc, "s0", "amount", "DATA_DRIFT", 450)
    a["window_end_event_time"] += sc.interval_ms  # later than the slice's event 450, before its 451
    assert score(sc, [a])["kinds"]["mean"]["delays"] == [50]


def test_first_matching_alert_is_the_detection_later_ones_repeats(sc):
    r = score(
        sc,
        [
            alert(sc, "s0", "amount", "DATA_DRIFT", 700),
            alert(sc, "s0", "amount", "DATA_DRIFT", 450),  # out of order on the topic: still the first
            alert(sc, "s0", "amount", "DATA_DRIFT", 900),
        ],
    )
    assert r["kinds"]["mean"]["delays"] == [50] and r["repeats"] == 2 and r["false_alarms"] == 0


def test_missed_drifts_are_counted(sc):
    r = score(sc, [alert(sc, "s0", "amount", "DATA_DRIFT", 420)])
    assert r["kinds"]["mean"]["missed"] == 0
    assert r["kinds"]["error_rate"]["missed"] == 1 and r["kinds"]["error_rate"]["median_delay"] is None
    assert r["kinds"]["label_shift"]["missed"] == 1
    assert [d["detected"] for d in r["drifts"]] == [True, False, False]


def test_false_alarms_per_million_stable_pair_events(sc):
    channels = sc.channels()  # amount, latency_ms, device, label, performance
    assert len(channels) == 5
    # 4 slices x 1000 events x 5 channels, less the drifted stretches: s0/amount after 400,
    # s1/performance after 500, s2/label after 600 and its side-effect pairs (prediction is
    # not a channel here; performance is) after 600
    stable = 4 * N * 5 - (N - 400) - (N - 500) - (N - 600) - (N - 600)
    assert stable_pair_events(sc.expected_alerts(), {s: N for s in SLICES}, channels) == stable
    r = score(
        sc,
        [
            alert(sc, "s3", "amount", "DATA_DRIFT", 100),  # stable slice
            alert(sc, "s0", "latency_ms", "DATA_DRIFT", 800),  # stable feature of a drifted slice
            alert(sc, "s0", "amount", "DATA_DRIFT", 300),  # drifted pair, before its onset
            alert(sc, "s3", None, "PERFORMANCE_DRIFT", 999),
        ],
    )
    assert r["stable_pair_events"] == stable
    assert r["false_alarms"] == 4
    assert r["false_alarms_per_million"] == pytest.approx(4 / stable * 1e6)
    assert r["false_alarm_types"] == {"DATA_DRIFT": 3, "PERFORMANCE_DRIFT": 1}
    assert r["kinds"]["mean"]["missed"] == 1  # the early alert is not a detection


def test_wrong_type_on_the_drifted_pair_is_neither_detection_nor_false_alarm(sc):
    r = score(sc, [alert(sc, "s0", "amount", "DATA_QUALITY", 450)])
    assert r["kinds"]["mean"]["detected"] == 0 and r["kinds"]["mean"]["wrong_type"] == 1
    assert r["drifts"][0]["wrong_type"] == {"delay": 50, "alert_type": "DATA_QUALITY"}
    assert r["false_alarms"] == 0


def test_side_effects_of_a_label_shift_are_collateral_not_false(sc):
    r = score(
        sc,
        [
            alert(sc, "s2", "prediction", "DATA_DRIFT", 700),
            alert(sc, "s2", None, "PERFORMANCE_DRIFT", 800),
            alert(sc, "s2", None, "PERFORMANCE_DRIFT", 100),  # before the onset: false
        ],
    )
    assert r["collateral"] == 2 and r["false_alarms"] == 1


def test_duplicate_ids_count_once_and_foreign_slices_are_ignored(sc):
    a = alert(sc, "s3", "amount", "DATA_DRIFT", 10, alert_id="x")
    other = {**alert(sc, "s3", "amount", "DATA_DRIFT", 10), "slice": "elsewhere"}
    r = score(sc, [a, dict(a), other])
    assert r["false_alarms"] == 1 and r["duplicates"] == 1 and r["foreign"] == 1


def test_evidently_flags_become_alerts_of_the_matching_type(sc):
    flags = [
        {"slice": "s0", "column": "amount", "window": 1, "end_event_time": sc.event_time("s0", 499)},
        {"slice": "s1", "column": "error", "window": 1, "end_event_time": sc.event_time("s1", 999)},
        {"slice": "s2", "column": "label", "window": 1, "end_event_time": sc.event_time("s2", 999)},
    ]
    alerts = evidently_alerts(flags)
    assert [(a["feature"], a["alert_type"]) for a in alerts] == [
        ("amount", "DATA_DRIFT"), (None, "PERFORMANCE_DRIFT"), ("label", "LABEL_DRIFT"),
    ]  # fmt: skip
    r = score(sc, alerts)
    assert r["kinds"]["mean"]["delays"] == [99]
    assert r["kinds"]["error_rate"]["delays"] == [499]
    assert r["kinds"]["label_shift"]["delays"] == [399]


def test_rate_from_commits():
    samples = [(0.5, 0), (3.0, 0), (4.0, 10_000), (5.0, 30_000), (6.0, 30_000), (9.0, 100_000)]
    r = rate_from_commits(samples, 100_000)
    assert r["events_per_second"] == pytest.approx(90_000 / 5.0)
    assert r["startup_seconds"] == 4.0 and r["measured_events"] == 90_000 and r["complete"]
    assert rate_from_commits(samples, 200_000)["events_per_second"] is None
    one = rate_from_commits([(0.0, 0), (2.0, 500)], 500)  # one commit covers everything
    assert one["approximate"] and one["events_per_second"] == pytest.approx(250)


def test_targets(sc):
    good = score(
        sc,
        [
            alert(sc, "s0", "amount", "DATA_DRIFT", 450),
            alert(sc, "s1", None, "PERFORMANCE_DRIFT", 600),
            alert(sc, "s2", "label", "LABEL_DRIFT", 650),
        ],
    )
    assert all(check_targets(good, {"events_per_second": 25_000}).values())
    t = check_targets(good, {"events_per_second": 3_000})
    assert not t["throughput >= 20,000 events/s"] and t["false alarms <= 1 per million"]
    slow = score(sc, [alert(sc, "s0", "amount", "DATA_DRIFT", 800)])
    assert not check_targets(slow, {"events_per_second": None})["every kind detected, median delay < 300"]


def test_suites_put_every_kind_on_its_own_slice():
    for quick, reps in ((True, 1), (False, 3)):
        s = build_suite(quick)
        exp = s.expected_alerts()
        assert sorted(e.kind for e in exp) == sorted(list(KINDS) * reps)
        assert len({e.slice for e in exp}) == len(exp)  # one drift per drifted slice
        assert len(s.slices) - len(exp) >= 3  # and stable slices besides
        assert all(e.alert_type == ALERT_FOR_KIND[e.kind] for e in exp)
        assert all(e.onset_index >= 1000 and s.events_per_slice - e.onset_index >= 1400 for e in exp)
    assert build_suite(True).total_events < build_suite(False).total_events // 10


def test_report_prints_both_systems_side_by_side(sc):
    ours = score(sc, [alert(sc, "s0", "amount", "DATA_DRIFT", 450)])
    theirs = score(sc, [alert(sc, "s0", "amount", "DATA_DRIFT", 899), alert(sc, "s3", "device", "DATA_DRIFT", 499)])
    tp = {"events_per_second": 4321.0, "measured_events": 9000, "measured_seconds": 2.1, "startup_seconds": 5.0}
    result = {
        "quick": True,
        "scenario": {"slices": 4, "events_per_slice": N, "events": 4 * N, "drifts": 3, "seed": 42, "channels": sc.channels()},
        "driftwatch": ours,
        "evidently": {
            "ok": True, "version": "0.7.23", "window": 500, "windows": 4, "seconds": 1.0,
            "methods": {"amount": "K-S p_value"}, "score": theirs,
        },
        "throughput": tp,
        "targets": check_targets(ours, tp),
        "seconds": 12.0,
    }
    text = format_report(result)
    assert "Evidently 0.7.23" in text and "4,321 events/s" in text
    mean_row = next(line for line in text.splitlines() if line.startswith("mean"))
    assert mean_row.split("|")[1].split()[:5] == ["1/1", "0", "0", "50", "50"]
    assert mean_row.split("|")[2].split()[:5] == ["1/1", "0", "0", "499", "499"]
    assert "FAIL" in text and not math.isnan(theirs["false_alarms_per_million"])


def test_run_settings_isolate_topics_group_and_store(tmp_path):
    from deploy.bench_throughput import bench_settings
    from schemas.settings import load_settings

    base = load_settings(run_dir=tmp_path, snapshot_every_seconds=10.0)
    run = bench_settings(base, "abc", app="bench-detect", sink=True)
    assert (run.topic_prefix, run.app_id, run.sink_group) == ("drift-bench-abc", "bench-detect-abc", "bench-sink-abc")
    assert run.clickhouse_dsn.get_secret_value() == f"chdb:{tmp_path.resolve() / 'bench' / 'abc' / 'clickhouse'}"
    assert run.snapshot_every_seconds == 1.0
    plain = bench_settings(base)
    assert plain.sink_group == base.sink_group and plain.clickhouse_dsn == base.clickhouse_dsn
    assert plain.app_id.startswith("bench-") and plain.app_id != bench_settings(base).app_id
