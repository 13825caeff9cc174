"""Synthetic scenarios: fixed-seed determinism, ground truth, and every drift kind doing what it says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploy.produce import validate_file
from deploy.scenarios import (
    ALERT_FOR_KIND,
    BASE_TIME_MS,
    KINDS,
    OUT_OF_RANGE_SENTINEL,
    Drift,
    Scenario,
)
from schemas.codec import EVENT
from schemas.events import normalize_event

N, ONSET = 4000, 2000
SLICES = ("a", "b", "c")
LEVELS = {"device": {"ios": 0.5, "android": 0.35, "web": 0.15}}


def scenario(*drifts: Drift, seed: int = 7, n: int = N) -> Scenario:
    return Scenario(slices=SLICES, events_per_slice=n, drifts=tuple(drifts), seed=seed, category_levels=LEVELS)


def cols(*drifts: Drift, slice_: str = "a", **kw):
    return scenario(*drifts, **kw).columns()[slice_]


def before_after(x: np.ndarray, onset: int = ONSET) -> tuple[np.ndarray, np.ndarray]:
    return x[:onset], x[onset:]


def error(c) -> np.ndarray:
    return ((c["prediction"] >= 0.5) != (c["label"] == 1)).astype(float)


# ------------------------------------------------------------------ shape and determinism
def test_defaults_and_positional_drift_still_work():
    sc = Scenario()
    assert sc.slices == ("eu-west", "us-east", "ap-south") and sc.events_per_slice == 3000
    assert sc.drifts == (Drift("eu-west", "amount", 1500),) and sc.drifts[0].kind == "mean"
    assert Drift("eu-west", "amount", 1500).size == 2.0
    evs = list(Scenario(events_per_slice=50).events())
    assert len(evs) == 150
    ev = evs[4]
    assert ev["slice"] == "us-east" and ev["event_id"] == "42-us-east-1"
    assert ev["event_time"] == BASE_TIME_MS + 4 * 100
    assert set(ev["features"]) == {"amount", "latency_ms"} and set(ev["categorical"]) == {"device"}
    assert 0.0 <= ev["prediction"] <= 1.0 and ev["label"] in (0, 1)
    EVENT.decode(EVENT.encode(ev))


def test_same_seed_same_events_other_seed_other_events():
    d = (Drift("a", "amount", 100, "mean"), Drift("b", None, 100, "error_rate"))
    one = list(scenario(*d, n=300).events())
    two = list(scenario(*d, n=300).events())
    other = list(scenario(*d, n=300, seed=8).events())
    assert one == two
    assert [e["features"] for e in one] != [e["features"] for e in other]
    assert [e["label"] for e in one] != [e["label"] for e in other]


def test_a_slice_does_not_depend_on_drifts_elsewhere():
    base = scenario(n=1000).columns()["c"]
    busy = scenario(
        Drift("a", "amount", 10, "mean"), Drift("b", "label", 10, "label_shift"), Drift("a", None, 10, "error_rate"), n=1000
    ).columns()["c"]
    for f in ("amount", "latency_ms"):
        np.testing.assert_array_equal(base["numeric"][f], busy["numeric"][f])
    np.testing.assert_array_equal(base["categorical"]["device"], busy["categorical"]["device"])
    np.testing.assert_array_equal(base["prediction"], busy["prediction"])
    np.testing.assert_array_equal(base["label"], busy["label"])


def test_stable_slices_stay_stable():
    c = cols(slice_="b", n=6000)
    for f, (mean, sd) in {"amount": (10, 2), "latency_ms": (20, 4)}.items():
        x0, x1 = before_after(c["numeric"][f], 3000)
        assert abs(x0.mean() - mean) < 0.15 * sd and abs(x1.mean() - mean) < 0.15 * sd
        assert abs(x1.std() / x0.std() - 1) < 0.1 and not np.isnan(x1).any()
    e0, e1 = before_after(error(c), 3000)
    assert abs(e1.mean() - e0.mean()) < 0.03 and 0.02 < e0.mean() < 0.2  # a decent, steady model
    l0, l1 = before_after(c["label"].astype(float), 3000)
    assert abs(l1.mean() - l0.mean()) < 0.05 and abs(l0.mean() - 0.5) < 0.05
    d0, d1 = before_after(c["categorical"]["device"], 3000)
    assert abs((d0 == "web").mean() - (d1 == "web").mean()) < 0.03


# ------------------------------------------------------------------ ground truth
def test_expected_alerts_name_type_feature_and_onset():
    drifts = [
        Drift("a", "amount", 100, "mean"),
        Drift("b", "latency_ms", 200, "scale"),
        Drift("c", "device", 300, "category_mix"),
        Drift("a", "ignored", 400, "error_rate"),
        Drift("b", None, 500, "label_shift"),
        Drift("c", "amount", 600, "missing"),
        Drift("a", "latency_ms", 700, "out_of_range"),
    ]
    sc = scenario(*drifts, n=1000)
    events = list(sc.events())
    exp = sc.expected_alerts()
    assert [e.kind for e in exp] == list(KINDS)
    assert [e.alert_type for e in exp] == [ALERT_FOR_KIND[k] for k in KINDS]
    assert [e.feature for e in exp] == ["amount", "latency_ms", "device", None, "label", "amount", "latency_ms"]
    for e in exp:
        ev = events[e.onset_position]
        assert ev["slice"] == e.slice and ev["event_id"] == f"7-{e.slice}-{e.onset_index}"
        assert ev["event_time"] == e.onset_event_time == sc.event_time(e.slice, e.onset_index)
        assert sc.slice_event_times(e.slice)[e.onset_index] == e.onset_event_time
    assert exp[4].side_effects and not exp[0].side_effects


@pytest.mark.parametrize(
    "drift, message",
    [
        (Drift("zz", "amount", 10), "unknown slice"),
        (Drift("a", "device", 10, "mean"), "numeric feature"),
        (Drift("a", "amount", 10, "category_mix"), "categorical feature"),
        (Drift("a", "amount", -1, "mean"), "negative"),
    ],
)
def test_bad_drifts_are_refused(drift, message):
    with pytest.raises(ValueError, match=message):
        scenario(drift).expected_alerts()


def test_a_drift_past_the_end_never_happens():
    sc = scenario(Drift("a", "amount", N + 5), Drift("b", "label", N, "label_shift"), n=N)
    assert sc.expected_alerts() == []
    np.testing.assert_array_equal(sc.columns()["a"]["numeric"]["amount"], cols()["numeric"]["amount"])


def test_unknown_kind_and_bad_size_are_refused():
    with pytest.raises(ValueError, match="kind"):
        Drift("a", "amount", 10, "wobble")
    with pytest.raises(ValueError, match="size"):
        Drift("a", "amount", 10, "mean", 0.0)


# ------------------------------------------------------------------ each kind changes what it claims
def test_mean_shift_moves_the_mean_by_size_sds_and_nothing_else():
    plain = cols()
    c = cols(Drift("a", "amount", ONSET, "mean", 1.5))
    x0, x1 = before_after(c["numeric"]["amount"])
    assert abs((x1.mean() - x0.mean()) / 2.0 - 1.5) < 0.15
    assert abs(x1.std() / x0.std() - 1) < 0.1
    np.testing.assert_array_equal(c["numeric"]["amount"][:ONSET], plain["numeric"]["amount"][:ONSET])
    # a feature drift leaves the other feature, predictions and labels exactly as they were
    np.testing.assert_array_equal(c["numeric"]["latency_ms"], plain["numeric"]["latency_ms"])
    np.testing.assert_array_equal(c["prediction"], plain["prediction"])
    np.testing.assert_array_equal(c["label"], plain["label"])


def test_scale_change_multiplies_the_sd():
    c = cols(Drift("a", "latency_ms", ONSET, "scale", 2.5))
    x0, x1 = before_after(c["numeric"]["latency_ms"])
    assert abs(x1.std() / x0.std() - 2.5) < 0.2
    assert abs(x1.mean() - x0.mean()) < 0.5


def test_category_mix_raises_the_rarest_category_odds():
    c = cols(Drift("a", "device", ONSET, "category_mix", 3.0))
    d0, d1 = before_after(c["categorical"]["device"])
    q0, q1 = (d0 == "web").mean(), (d1 == "web").mean()
    expected = 0.15 * 3 / (0.15 * 3 + 0.85)
    assert abs(q0 - 0.15) < 0.03 and abs(q1 - expected) < 0.03
    assert set(d1) == {"ios", "android", "web"}
    # the other two keep their relative proportions
    r0 = (d0 == "ios").mean() / (d0 == "android").mean()
    r1 = (d1 == "ios").mean() / (d1 == "android").mean()
    assert abs(r1 / r0 - 1) < 0.2


def test_error_rate_drift_raises_errors_not_the_label_rate():
    plain = cols()
    c = cols(Drift("a", None, ONSET, "error_rate", 3.0))
    e0, e1 = before_after(error(c))
    assert e1.mean() > 2.0 * e0.mean() and e1.mean() > e0.mean() + 0.1
    l0, l1 = before_after(c["label"].astype(float))
    assert abs(l1.mean() - l0.mean()) < 0.05
    np.testing.assert_array_equal(c["prediction"], plain["prediction"])  # the model did not change
    np.testing.assert_array_equal(c["numeric"]["amount"], plain["numeric"]["amount"])


def test_label_shift_changes_the_label_rate():
    c = cols(Drift("a", "label", ONSET, "label_shift", 3.0))
    l0, l1 = before_after(c["label"].astype(float))
    odds0 = l0.mean() / (1 - l0.mean())
    odds1 = l1.mean() / (1 - l1.mean())
    assert abs(odds1 / odds0 - 3.0) < 0.6 and l1.mean() > l0.mean() + 0.15
    # prior shift: predictions follow, and the model stays about as good
    p0, p1 = before_after(c["prediction"])
    assert p1.mean() > p0.mean() + 0.05
    e0, e1 = before_after(error(c))
    assert abs(e1.mean() - e0.mean()) < 0.05


def test_missing_values_jump():
    c = cols(Drift("a", "amount", ONSET, "missing", 2.0))
    m0, m1 = before_after(np.isnan(c["numeric"]["amount"]))
    assert m0.mean() == 0 and abs(m1.mean() - 0.2) < 0.03
    events = [e for e in scenario(Drift("a", "amount", ONSET, "missing", 2.0)).events() if e["slice"] == "a"]
    assert any(e["features"]["amount"] is None for e in events[ONSET:])
    assert all(e["features"]["amount"] is not None for e in events[:ONSET])


def test_out_of_range_values_appear():
    c = cols(Drift("a", "latency_ms", ONSET, "out_of_range", 0.5))
    x0, x1 = before_after(c["numeric"]["latency_ms"])
    assert (x0 == OUT_OF_RANGE_SENTINEL).sum() == 0 and x0.min() > -20
    share = (x1 == OUT_OF_RANGE_SENTINEL).mean()
    assert abs(share - 0.05) < 0.015
    ok = x1[x1 != OUT_OF_RANGE_SENTINEL]
    assert abs(ok.mean() - x0.mean()) < 0.5  # the rest keeps its distribution


# ------------------------------------------------------------------ JSON lines
def test_write_jsonl_is_what_driftctl_produce_reads(tmp_path):
    sc = scenario(Drift("a", "amount", 10, "missing", 5.0), n=200)
    path = tmp_path / "s.jsonl"
    assert sc.write_jsonl(path) == sc.total_events
    assert validate_file(path) == sc.total_events
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert set(lines[0]) == {"event_id", "event_time", "model", "slice", "features", "categorical", "prediction", "label"}
    assert any(line["features"]["amount"] is None for line in lines)
    events = list(sc.events())
    assert [normalize_event(line)["event_id"] for line in lines] == [e["event_id"] for e in events]
    assert normalize_event(lines[5])["features"] == events[5]["features"]
