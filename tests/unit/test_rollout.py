"""The rollout state machine alone: its stages, its records, and its error rates on fixed seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retrain_jobs.rollout import (
    CAUSE_CANARY_REGRESSED,
    CAUSE_SHADOW_LOST,
    CAUSE_SHADOW_UNDECIDED,
    CAUSE_WATCH_PASSED,
    CAUSE_WATCH_REGRESSED,
    BettingTest,
    Rollout,
    RolloutConfig,
    RolloutError,
)
from retrain_jobs.routing import serves_candidate
from retrain_jobs.sequential import SequentialTestError
from schemas.settings import load_settings


def rollout(**config) -> Rollout:
    r = Rollout(RolloutConfig(**config), "m", "v2", "v1", ["eu"], "req-1")
    assert r.start().kind == "SHADOW"
    return r


def losses(rng, n, gain, noise=0.3, base=1.2):
    """n paired (incumbent, candidate) log losses whose mean difference is ``gain`` (the base keeps
    them away from 0, where taking the absolute value would bias it)."""
    inc = np.abs(base + rng.normal(0, noise, n))
    cand = np.abs(inc - gain + rng.normal(0, noise, n))
    return inc, cand


def drive(r: Rollout, inc, cand, start=0, until=None):
    """Feed pairs until the rollout ends (or enters the phase ``until``); its transitions."""
    out = []
    for i, (a, b) in enumerate(zip(inc, cand, strict=True)):
        if r.done or r.phase == until:
            break
        t = r.observe(f"e{start + i}", a, b)
        if t is not None:
            out.append(t)
    return out


def test_clear_gain_goes_shadow_canary_watch_and_is_kept():
    rng = np.random.default_rng(1)
    r = rollout(canary_events=200, watch_events=300)
    inc, cand = losses(rng, 3000, gain=0.25)
    ts = drive(r, inc, cand)
    assert [t.kind for t in ts] == ["CANARY", "WATCH", "WATCH_PASSED"]
    shadow, promoted, watch = ts
    assert shadow.decision is None and shadow.statistic >= 1 / 0.05 and shadow.events < 300
    assert promoted.stage == "PROMOTED" and promoted.decision == "PROMOTED" and promoted.events == 200
    assert watch.cause == CAUSE_WATCH_PASSED and watch.decision is None and r.phase == "PROMOTED" and r.done
    assert promoted.checks["canary_served"] > 0 and promoted.checks["canary_regret"] < 0  # it gained while serving
    assert shadow.checks["shadow_events"] == shadow.events
    assert "e-value" in shadow.reason and "false-promotion rate <= 0.05" in shadow.reason


def test_worse_candidate_is_rejected_in_shadow_early():
    rng = np.random.default_rng(2)
    r = rollout(max_shadow_events=3000)
    ts = drive(r, *losses(rng, 3000, gain=-0.2))
    assert [t.kind for t in ts] == ["REJECTED"]
    assert ts[0].cause == CAUSE_SHADOW_LOST and ts[0].decision == "REJECTED" and ts[0].events < 500
    assert r.canary_served == 0


def test_undecided_candidate_is_rejected_at_the_max_window():
    rng = np.random.default_rng(3)
    r = rollout(max_shadow_events=400)
    inc = np.abs(0.7 + rng.normal(0, 0.4, 400))
    ts = drive(r, inc, inc + 0.0)  # exactly as good: no evidence either way
    assert [(t.kind, t.cause, t.events) for t in ts] == [("REJECTED", CAUSE_SHADOW_UNDECIDED, 400)]


def test_canary_regression_rolls_back_and_charges_the_regret():
    rng = np.random.default_rng(4)
    r = rollout(canary_events=2000)
    good = losses(rng, 2000, gain=0.3)
    ts = drive(r, *good, until="CANARY")
    assert r.phase == "CANARY" and [t.kind for t in ts] == ["CANARY"]
    bad = losses(rng, 2000, gain=-0.3)
    ts = drive(r, *bad, start=10_000)
    assert [t.kind for t in ts] == ["ROLLED_BACK"]
    assert ts[0].cause == CAUSE_CANARY_REGRESSED and ts[0].decision == "ROLLED_BACK"
    assert ts[0].checks["canary_regret"] > 0 and ts[0].checks["canary_served"] >= 1


def test_watch_regression_rolls_back_after_promotion():
    rng = np.random.default_rng(5)
    r = rollout(canary_fraction=0.0, watch_events=2000, watch_tolerance=0.02)
    ts = drive(r, *losses(rng, 2000, gain=0.3), until="WATCH")
    assert [t.kind for t in ts] == ["WATCH"] and ts[0].decision == "PROMOTED" and r.stage == "PROMOTED"
    ts = drive(r, *losses(rng, 2000, gain=-0.25), start=5000)
    assert [(t.kind, t.cause) for t in ts] == [("ROLLED_BACK", CAUSE_WATCH_REGRESSED)]
    assert ts[0].checks["watch_mean_increase"] > 0.02


def test_a_regression_that_begins_late_in_the_watch_is_not_averaged_away():
    rng = np.random.default_rng(10)
    r = rollout(canary_fraction=0.0, watch_events=1000, watch_tolerance=0.02, restart_events=50)
    drive(r, *losses(rng, 500, gain=0.5), until="WATCH")
    assert drive(r, *losses(rng, 300, gain=0.5)) == []  # a good start of the watch banks evidence for v2
    ts = drive(r, *losses(rng, 700, gain=-0.3), start=9000)
    assert [t.cause for t in ts] == [CAUSE_WATCH_REGRESSED]
    assert r.worse.mean < 0, "over the whole watch v2 still looks better; the restarted test saw the change"
    assert "on the last" in ts[0].reason and ts[0].statistic >= r.worse.threshold


def test_false_rollback_rate_of_the_restarting_watch_holds_over_seeded_null_runs():
    """A promoted version exactly as good as its predecessor, watched for 500 events restarting
    every 25 (20 tests at alpha/20 each): at most alpha of the runs may roll back."""
    alpha, runs, rolled = 0.05, 200, 0
    for seed in range(runs):
        rng = np.random.default_rng(5000 + seed)
        r = rollout(canary_fraction=0.0, watch_events=500, watch_tolerance=0.0, restart_events=25, harm_alpha=alpha)
        drive(r, *losses(rng, 400, gain=0.6), until="WATCH")
        base = np.abs(1.2 + rng.normal(0, 0.3, 500))
        ts = drive(r, np.abs(base + rng.normal(0, 0.3, 500)), np.abs(base + rng.normal(0, 0.3, 500)))
        rolled += any(t.kind == "ROLLED_BACK" for t in ts)
    assert rolled <= alpha * runs


def test_watch_within_tolerance_keeps_the_version():
    rng = np.random.default_rng(6)
    r = rollout(canary_fraction=0.0, watch_events=1500, watch_tolerance=0.05)
    drive(r, *losses(rng, 2000, gain=0.3), until="WATCH")
    inc = np.abs(0.7 + rng.normal(0, 0.4, 1500))
    ts = drive(r, inc, inc + 0.01)  # slightly worse, within the tolerance
    assert [t.kind for t in ts] == ["WATCH_PASSED"] and r.phase == "PROMOTED"


def test_false_promotion_rate_holds_over_seeded_null_runs():
    """A candidate exactly as good as the incumbent (exchangeable losses): at most alpha of the
    runs may promote, stopping whenever the test says (the anytime guarantee)."""
    alpha, runs = 0.05, 300
    promoted = 0
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        base = np.abs(0.7 + rng.normal(0, 0.4, 600))
        a, b = np.abs(base + rng.normal(0, 0.3, 600)), np.abs(base + rng.normal(0, 0.3, 600))
        r = rollout(alpha=alpha, max_shadow_events=600, canary_fraction=0.0, watch_events=0)
        ts = drive(r, a, b)
        promoted += any(t.decision == "PROMOTED" for t in ts)
    assert promoted <= alpha * runs


def test_power_a_small_real_gain_is_found_within_the_window():
    found = 0
    for seed in range(40):
        r = rollout(max_shadow_events=3000, canary_fraction=0.0, watch_events=0)
        ts = drive(r, *losses(np.random.default_rng(seed), 3000, gain=0.08))
        found += ts[-1].decision == "PROMOTED"
    assert found >= 36


def test_e_value_is_a_supermartingale_under_the_null():
    """Mean e-value at a fixed n stays <= 1 (up to sampling error) when E[x] = margin."""
    values = []
    for seed in range(400):
        t = BettingTest(alpha=0.05, margin=0.1)
        for x in np.random.default_rng(seed).uniform(-0.8, 1.0, 200):  # mean 0.1
            t.update(x)
        values.append(t.e_value)
    assert np.mean(values) < 1.2


def test_min_improvement_must_be_proven():
    rng = np.random.default_rng(7)
    r = rollout(min_improvement=0.2, max_shadow_events=2000)
    ts = drive(r, *losses(rng, 2000, gain=0.1))  # better, but not by 0.2
    assert ts[-1].decision == "REJECTED"


def test_checkpoint_round_trip_continues_identically():
    rng = np.random.default_rng(8)
    inc, cand = losses(rng, 1500, gain=0.15)
    whole = rollout(canary_events=300, watch_events=400)
    expected = drive(whole, inc, cand)
    part = rollout(canary_events=300, watch_events=400)
    first = drive(part, inc[:100], cand[:100])
    restored = Rollout.from_dict(json.loads(json.dumps(part.to_dict())))
    rest = drive(restored, inc[100:], cand[100:], start=100)
    assert [t.kind for t in first + rest] == [t.kind for t in expected]
    assert [t.events for t in first + rest] == [t.events for t in expected]
    assert restored.history == whole.history


def test_canary_share_is_the_shared_hash():
    rng = np.random.default_rng(9)
    r = rollout(canary_fraction=0.3, canary_events=10_000)
    drive(r, *losses(rng, 1000, gain=0.4), until="CANARY")
    assert r.phase == "CANARY" and r.canary_fraction == 0.3
    assert all(r.serves_candidate(f"id{i}") == serves_candidate(f"id{i}", 0.3) for i in range(200))
    before = r.canary_served
    for i in range(1000):
        r.observe(f"c{i}", 0.5, 0.5)
    assert r.canary_served - before == sum(serves_candidate(f"c{i}", 0.3) for i in range(1000))


def test_misuse_is_an_error_and_nan_is_ignored():
    r = Rollout(RolloutConfig(), "m", "v2", "v1", ["eu"], "r")
    with pytest.raises(RolloutError):
        r.observe("e", 0.1, 0.2)  # not started
    r.start()
    with pytest.raises(RolloutError):
        r.start()
    assert r.observe("e", math.nan, 0.2) is None and r.events == 0
    with pytest.raises(SequentialTestError):
        BettingTest(alpha=0.05, margin=1.0)
    with pytest.raises(RolloutError):
        RolloutConfig(loss_clip=1.0, watch_tolerance=2.0)


def test_config_from_settings():
    s = load_settings(rollout_alpha=0.01, rollout_canary_fraction=0.2, rollout_watch_events=50)
    c = RolloutConfig.from_settings(s)
    assert (c.alpha, c.canary_fraction, c.watch_events) == (0.01, 0.2, 50)
