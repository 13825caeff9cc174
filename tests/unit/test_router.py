"""The pure policy router: coalescing, cooldown, budget, priority, escalation, ids, snapshots.

Every test drives the policy with an explicit clock (``now`` in seconds) and explicit end
offsets of the events topic; the planner is a small in-test function following the
dependency map's documented rules (one slice's performance drift -> its adapter, broader
tiers on request), so the router's own decisions are what is tested.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from consumers.router import Router, RouterConfig
from consumers.router_requests import (
    POLICY_VERSION,
    onset_offset,
    post_alert_events,
    priority_for,
    request_id_for,
    slice_share,
)
from consumers.router_restore import restore
from schemas.codec import RETRAIN_REQUEST
from schemas.retraining import Cause
from schemas.settings import load_settings

T0 = 1_000_000.0  # seconds
EVENTS = "t.events"


@dataclass(frozen=True)
class Plan:
    tier: str
    modules: tuple[str, ...]
    slices: tuple[str, ...]


def planner(model, alerts, tier, n_seen):
    slices = tuple(sorted({a["slice"] for a in alerts}))
    if tier is None:
        tier = "ADAPTER" if len(slices) == 1 else "FULL"
    modules = {
        "ADAPTER": tuple(f"adapter.{s}" for s in slices),
        "MODULE": tuple(f"adapter.{s}" for s in slices) + tuple(sorted({f"encoder.{a['feature']}" for a in alerts if a["feature"]})),
        "FULL": ("trunk", "*"),
    }[tier]
    return Plan(tier, modules, slices)


def next_tier(tier):
    return {"ADAPTER": "MODULE", "MODULE": "FULL"}.get(tier)


def alert(slice_="eu", n=1, *, model="m", severity="MEDIUM", partition=0, first=1000, last=1500, count=200,
          feature="amount", span_ms=60_000, alert_type="DATA_DRIFT"):  # fmt: skip
    return {
        "alert_id": f"{model}-{slice_}-{feature}-{n}",
        "alert_type": alert_type,
        "severity": severity,
        "model": model,
        "slice": slice_,
        "feature": feature,
        "partition": partition,
        "first_offset": first,
        "last_offset": last,
        "current": {"count": count, "mean": 1.0, "std": 1.0, "min": 0.0, "max": 2.0},
        "window_start_event_time": 1_790_000_000_000,
        "window_end_event_time": 1_790_000_000_000 + span_ms,
    }


def defaults(**overrides) -> RouterConfig:
    """The configuration a router gets from default settings, on this test's events topic."""
    return dataclasses.replace(RouterConfig.from_settings(load_settings()), **{"events_topic": EVENTS, **overrides})


def router(**overrides) -> Router:
    cfg = {"coalesce_seconds": 10, "max_wait_seconds": 300, "min_post_alert_events": 100, "cooldown_seconds": 600,
               "max_in_flight": 2, "in_flight_timeout_seconds": 1800, "reference_events": 500, "snapshot_max_events": 10_000,
               "other_partition_events": 300, "events_topic": EVENTS, "broad_min_slices": 3, "broad_fraction": 0.6,
               "max_tier": "FULL"}  # fmt: skip
    cfg.update(overrides)
    return Router(defaults(**cfg), planner, next_tier)


ENDS = {0: 5000, 1: 4000, 2: 3000}


def result(req, decision="REJECTED", reason="slice did not improve", cause=None):
    cause = cause or {"REJECTED": Cause.MIN_GAIN, "SKIPPED": Cause.NO_HARM}.get(decision, Cause.GATE_PASSED)
    return {"request_id": req["request_id"], "model": req["model"], "slices": req["slices"], "decision": decision,
            "reason": reason, "tier": req["tier"], "cause": cause.value, "finished_at": 0}  # fmt: skip


# --- coalescing ---------------------------------------------------------------------------


def test_alerts_of_one_slice_within_the_window_make_one_request():
    r = router()
    assert r.on_alert(alert(n=1), T0) == "pending"
    assert r.on_alert(alert(n=2, feature="latency", first=1200, last=1700), T0 + 5) == "pending"
    assert r.due(T0 + 9.9, ENDS) == [], "still inside the coalesce window"
    (req,) = r.due(T0 + 10, ENDS)
    assert req["alert_ids"] == sorted(["m-eu-amount-1", "m-eu-latency-2"])
    assert req["slices"] == ["eu"] and req["tier"] == "ADAPTER" and req["modules"] == ["adapter.eu"]
    assert req["policy_version"] == POLICY_VERSION and req["created_at"] == int((T0 + 10) * 1000)
    assert r.due(T0 + 11, ENDS) == [], "emitted once"
    RETRAIN_REQUEST.decode(RETRAIN_REQUEST.encode(req))  # matches the Avro schema


def test_different_slices_are_separate_requests():
    r = router()
    r.on_alert(alert("eu", partition=0), T0)
    r.on_alert(alert("us", partition=1, first=800, last=1300), T0)
    reqs = r.due(T0 + 10, ENDS)
    assert sorted(q["slices"][0] for q in reqs) == ["eu", "us"]
    assert all(len(q["slices"]) == 1 for q in reqs)


def test_waits_for_enough_post_alert_events_then_max_wait_releases():
    r = router(min_post_alert_events=1000)
    a = alert(first=1000, last=1999, count=500)  # the slice is half of its partition's events
    r.on_alert(a, T0)
    assert post_alert_events(a, 3000) == pytest.approx(500)
    assert r.due(T0 + 20, {0: 3000}) == [], "only ~500 post-alert events of the slice so far"
    assert len(r.due(T0 + 20, {0: 4000})) == 1, "~1000 now"
    r2 = router(min_post_alert_events=1000)
    r2.on_alert(a, T0)
    assert r2.due(T0 + 299, {0: 2000}) == []
    assert len(r2.due(T0 + 300, {0: 2000})) == 1, "max_wait_seconds releases it anyway"


def test_duplicate_alert_is_ignored_pending_and_after_the_request():
    r = router()
    r.on_alert(alert(n=1), T0)
    assert r.on_alert(alert(n=1), T0 + 1) == "duplicate"
    (_req,) = r.due(T0 + 10, ENDS)
    assert r.on_alert(alert(n=1), T0 + 10_000) == "duplicate", "a replayed alert makes no second request"
    assert r.due(T0 + 20_000, ENDS) == []


# --- cooldown and busy --------------------------------------------------------------------


def test_cooldown_suppresses_new_alerts_of_the_slice_after_its_request():
    r = router(cooldown_seconds=600)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    r.on_result(result(req, "PROMOTED", "improved"), T0 + 60)
    assert r.on_alert(alert(n=2), T0 + 100) == "cooldown"
    assert r.on_alert(alert("us", n=3, partition=1), T0 + 100) == "pending", "other slices are not cooled down"
    assert r.on_alert(alert(n=4), T0 + 10 + 600) == "pending", "cooldown over"


def test_slice_with_a_request_in_flight_takes_no_new_alerts():
    r = router(cooldown_seconds=0)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert r.on_alert(alert(n=2), T0 + 20) == "busy"
    r.on_result(result(req, "PROMOTED", "ok"), T0 + 30)
    assert r.on_alert(alert(n=3), T0 + 31) == "pending"


def live(req, decision, cause, at_ms=0):
    """A result of the rollout service (decided on live events)."""
    return {**result(req, decision, f"{cause}: e-value ..."), "cause": cause, "finished_at": at_ms}


def test_a_candidate_keeps_its_slice_busy_until_the_rollout_decides_but_frees_the_budget():
    r = router(cooldown_seconds=0, max_in_flight=1)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert r.on_result(result(req, "CANDIDATE", "passed: ..."), T0 + 20) == []
    assert r.in_flight == {} and r.counters["result_candidate"] == 1
    assert r.on_alert(alert(n=2), T0 + 30) == "busy", "the rollout has not decided"
    r.on_alert(alert("us", partition=1), T0 + 30)
    assert [q["slices"] for q in r.due(T0 + 50, ENDS)] == [["us"]], "the budget slot is free for other slices"
    assert r.on_result(live(req, "PROMOTED", "rollout_canary_passed"), T0 + 60) == []
    assert r.on_alert(alert(n=3), T0 + 61) == "pending"


def test_a_rollback_cools_the_slice_down_and_is_never_escalated():
    r = router(cooldown_seconds=600)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    r.on_result(result(req, "CANDIDATE", "passed"), T0 + 20)
    r.on_result(live(req, "PROMOTED", "rollout_canary_passed"), T0 + 100)
    assert r.on_result(live(req, "ROLLED_BACK", "rollout_watch_regressed"), T0 + 5000) == []
    assert r.on_alert(alert(n=2), T0 + 5000 + 599) == "cooldown", "the same drift does not retrain again at once"
    assert r.on_alert(alert(n=3), T0 + 5000 + 600) == "pending"
    assert r.counters["result_live_rolled_back"] == 1 and "escalated" not in r.counters


def test_a_live_rejection_is_final_and_cools_down_while_a_gate_rejection_escalates():
    r = router(cooldown_seconds=300)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    r.on_result(result(req, "CANDIDATE", "passed"), T0 + 20)
    assert r.on_result(live(req, "REJECTED", "rollout_shadow_lost"), T0 + 1000) == []
    assert r.on_alert(alert(n=2), T0 + 1200) == "cooldown"
    assert "escalated" not in r.counters and r.counters["result_live_rejected"] == 1
    stale = router(cooldown_seconds=300)
    stale.on_alert(alert(n=1), T0)
    (sreq,) = stale.due(T0 + 10, ENDS)
    stale.on_result(result(sreq, "CANDIDATE", "passed"), T0 + 20)
    assert stale.on_result({**live(sreq, "REJECTED", "rollout_stale_parent"), "reason": "stale parent: moved"},
                           T0 + 1000) == []
    assert stale.on_alert(alert(n=2), T0 + 1000) == "pending", "another version won the race: no new cooldown"
    g = router()
    g.on_alert(alert(n=1), T0)
    (greq,) = g.due(T0 + 10, ENDS)
    assert len(g.on_result(result(greq), T0 + 20)) == 1, "the offline gate's rejection still escalates"


def test_a_rollout_hold_ends_after_its_timeout():
    r = router(cooldown_seconds=0, rollout_hold_seconds=100)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    r.on_result(result(req, "CANDIDATE", "passed"), T0 + 20)
    assert r.expire(T0 + 119) == [] and r.on_alert(alert(n=2), T0 + 119) == "busy"
    assert r.expire(T0 + 120) == [req["request_id"]]
    assert r.on_alert(alert(n=3), T0 + 121) == "pending"


def test_restore_keeps_rolling_out_slices_busy_and_cools_rolled_back_ones():
    r = router(cooldown_seconds=600)
    r.on_alert(alert(n=1), T0)
    (eu,) = r.due(T0 + 10, ENDS)
    r.on_alert(alert("us", n=2, partition=1), T0)
    (us,) = r.due(T0 + 10, ENDS)
    ms = int(T0 * 1000)
    results = [{**result(eu, "CANDIDATE", "passed"), "finished_at": ms + 20_000},
               {**result(us, "CANDIDATE", "passed"), "finished_at": ms + 20_000},
               live(us, "ROLLED_BACK", "rollout_watch_regressed", at_ms=ms + 3_000_000)]
    fresh = router(cooldown_seconds=600)
    restore(fresh, [eu, us], results, T0 + 3100)
    assert fresh.on_alert(alert(n=7), T0 + 3100) == "busy", "eu's rollout is still deciding"
    assert fresh.on_alert(alert("us", n=8, partition=1), T0 + 3100) == "cooldown", "us was rolled back at T0+3000"
    assert fresh.on_alert(alert("us", n=9, partition=1), T0 + 3600) == "pending"


# --- budget and priority ------------------------------------------------------------------


def test_budget_holds_requests_until_a_result_frees_a_slot_highest_priority_first():
    r = router(max_in_flight=1)
    r.on_alert(alert("low", severity="LOW", partition=0), T0)
    r.on_alert(alert("high", severity="HIGH", partition=1, first=100, last=600), T0 + 1)
    (first,) = r.due(T0 + 20, ENDS)
    assert first["slices"] == ["high"], "the higher severity goes first"
    assert r.due(T0 + 30, ENDS) == [], "budget of 1 is used"
    assert r.counters["budget_wait"] >= 1
    r.on_result(result(first, "PROMOTED", "ok"), T0 + 40)
    (second,) = r.due(T0 + 41, ENDS)
    assert second["slices"] == ["low"]


def test_a_request_without_result_frees_its_slot_after_the_timeout():
    r = router(max_in_flight=1, in_flight_timeout_seconds=100)
    r.on_alert(alert("a", partition=0), T0)
    r.on_alert(alert("b", partition=1), T0)
    (first,) = r.due(T0 + 10, ENDS)
    assert r.expire(T0 + 109) == []
    assert r.expire(T0 + 110) == [first["request_id"]]
    (second,) = r.due(T0 + 111, ENDS)
    assert second["slices"] != first["slices"]


def test_priority_grows_with_severity_then_traffic():
    busy = alert(count=6000, span_ms=60_000)  # 6000 events/min
    quiet = alert(count=60, span_ms=60_000)  # 60 events/min
    assert priority_for([busy]) > priority_for([quiet])
    assert priority_for([alert(severity="HIGH", count=1)]) > priority_for([alert(severity="MEDIUM", count=10**9)])
    assert priority_for([quiet]) == 2000 + round(100 * 1.7853298350107671)  # log10(61)


def test_equal_priority_releases_the_older_group_first():
    r = router(max_in_flight=1)
    r.on_alert(alert("b", partition=1), T0)
    r.on_alert(alert("a", partition=0), T0 + 5)
    (req,) = r.due(T0 + 20, ENDS)
    assert req["slices"] == ["b"]


# --- escalation ---------------------------------------------------------------------------


def test_default_max_tier_is_module_so_no_automatic_full_retrain():
    assert defaults().max_tier == "MODULE"
    r = Router(defaults(coalesce_seconds=0, min_post_alert_events=0), planner, next_tier)
    r.on_alert(alert(), T0)
    (req,) = r.due(T0, ENDS)
    (mod,) = r.on_result(result(req), T0 + 1)
    assert mod["tier"] == "MODULE"
    assert r.on_result(result(mod), T0 + 2) == []


def test_rejection_escalates_adapter_module_full_then_gives_up():
    r = router(max_escalations=2)
    r.on_alert(alert(), T0)
    (req,) = r.due(T0 + 10, ENDS)
    (mod,) = r.on_result(result(req), T0 + 50)
    assert mod["tier"] == "MODULE" and mod["modules"] == ["adapter.eu", "encoder.amount"]
    assert mod["snapshot"] == req["snapshot"] and mod["alert_ids"] == req["alert_ids"]
    assert mod["request_id"] != req["request_id"]
    (full,) = r.on_result(result(mod), T0 + 90)
    assert full["tier"] == "FULL"
    assert r.on_result(result(full), T0 + 130) == [], "nothing above FULL"
    assert r.in_flight == {}


def test_escalation_stops_at_max_tier_and_not_after_failed_jobs_or_promotions():
    r = router(max_tier="MODULE")
    r.on_alert(alert(), T0)
    (req,) = r.due(T0 + 10, ENDS)
    (mod,) = r.on_result(result(req), T0 + 50)
    assert r.on_result(result(mod), T0 + 60) == [], "max_tier MODULE"

    r = router()
    r.on_alert(alert(), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert r.on_result(result(req, reason="job failed: ValueError: x", cause=Cause.JOB_FAILED), T0 + 50) == []
    r = router()
    r.on_alert(alert(), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert r.on_result(result(req, reason="min_gain: text the router never reads", cause=Cause.HOLDOUT), T0 + 50) == []
    r = router()
    r.on_alert(alert(), T0)
    (req,) = r.due(T0 + 10, ENDS)
    legacy = {k: v for k, v in result(req, reason="min_gain: s1 gain -0.001").items() if k != "cause"}
    assert r.on_result(legacy, T0 + 50) == [], "a result without a cause (older writer) is final"
    r = router()
    r.on_alert(alert(), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert r.on_result(result(req, "PROMOTED", "better"), T0 + 50) == []
    assert r.on_result({"request_id": "unknown", "model": "m", "decision": "REJECTED", "reason": "x"}, T0) == []


def test_max_escalations_zero_means_no_escalation():
    r = router(max_escalations=0)
    r.on_alert(alert(), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert r.on_result(result(req), T0 + 50) == []


def test_planner_tier_above_max_tier_is_capped():
    r = router(max_tier="ADAPTER", broad_min_slices=2, broad_fraction=0.5)
    for i, s in enumerate(("a", "b")):
        r.on_alert(alert(s, partition=i), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert req["tier"] == "ADAPTER" and req["modules"] == ["adapter.a", "adapter.b"]


# --- broad drift ---------------------------------------------------------------------------


def test_most_slices_drifting_together_make_one_broad_request():
    r = router()
    for s in ("a", "b", "c", "d", "e"):
        r.observe_slice("m", s)
    for i, s in enumerate(("a", "b", "c")):
        r.on_alert(alert(s, partition=i), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert req["slices"] == ["a", "b", "c"] and req["tier"] == "FULL"
    assert len(req["alert_ids"]) == 3


def test_a_minority_of_slices_drifting_stays_per_slice():
    r = router()
    for s in ("a", "b", "c", "d", "e", "f"):
        r.observe_slice("m", s)
    for i, s in enumerate(("a", "b", "c")):
        r.on_alert(alert(s, partition=i), T0)
    reqs = r.due(T0 + 10, ENDS)
    assert len(reqs) == 2, "budget 2 of 3 per-slice requests (3/6 < 0.6)"
    assert all(len(q["slices"]) == 1 and q["tier"] == "ADAPTER" for q in reqs)


def test_broad_request_pulls_in_pending_groups_of_the_model_that_are_not_due_yet():
    r = router()
    for s in ("a", "b", "c", "d"):
        r.observe_slice("m", s)
    for i, s in enumerate(("a", "b", "c")):
        r.on_alert(alert(s, partition=i), T0)
    r.on_alert(alert("d", partition=0, first=2000, last=2500), T0 + 8)
    (req,) = r.due(T0 + 10, ENDS)
    assert req["slices"] == ["a", "b", "c", "d"]
    assert r.pending == {}


# --- ids and snapshots ---------------------------------------------------------------------


def test_request_id_is_deterministic_and_order_independent():
    a = request_id_for("m", ["b", "a"], "ADAPTER", ["x", "y"])
    assert a == request_id_for("m", ["a", "b"], "ADAPTER", ["y", "x"])
    assert a != request_id_for("m", ["a", "b"], "MODULE", ["x", "y"])
    assert a != request_id_for("m", ["a", "b"], "ADAPTER", ["x"])


def test_a_replay_of_the_same_alerts_in_a_fresh_router_makes_the_same_request_id():
    ids = []
    for clock in (T0, T0 + 7777):  # another time, other end offsets: same id
        r = router()
        r.on_alert(alert(n=2), clock)
        r.on_alert(alert(n=1, feature="x"), clock + 1)
        (req,) = r.due(clock + 30, {p: e + int(clock - T0) for p, e in ENDS.items()})
        ids.append(req["request_id"])
    assert ids[0] == ids[1]


def test_snapshot_covers_reference_window_and_post_drift_data_and_other_partitions():
    r = router(reference_events=500, other_partition_events=300)
    r.on_alert(alert(partition=1, first=1000, last=1500), T0)
    r.on_alert(alert(n=2, partition=1, first=1200, last=1900, feature="latency"), T0 + 1)
    (req,) = r.due(T0 + 10, {0: 5000, 1: 4000, 2: 100})
    snap = req["snapshot"]
    assert snap["topic"] == EVENTS and snap["labelled_only"] is True and snap["slice_filter"] == ["eu"]
    ranges = {x["partition"]: (x["start_offset"], x["end_offset"]) for x in snap["ranges"]}
    assert ranges[1] == (500, 4000), "500 before the earliest window start, to the partition's end"
    assert ranges[0] == (4700, 5000), "latest 300 events of a partition without alert"
    assert ranges[2] == (0, 100)


def test_onset_is_estimated_from_the_current_part_of_the_window():
    a = alert(first=1000, last=2999, count=300)
    a["reference"] = {"count": 700}
    assert slice_share(a) == pytest.approx(0.5)  # 1000 of the slice's events in 2000 offsets
    assert onset_offset(a) == 3000 - 600, "300 current events of the slice span ~600 offsets"
    a["current"]["count"] = 5000
    assert onset_offset(a) == 1000, "never before the window"
    r = router(reference_events=0)
    a["current"]["count"] = 300
    snap = r.snapshot([a], ["eu"], {0: 4000})
    assert [(x["start_offset"], x["end_offset"]) for x in snap["ranges"] if x["partition"] == 0] == [(2400, 4000)]


def test_snapshot_is_capped_but_always_reaches_past_the_window():
    r = router(reference_events=100, snapshot_max_events=1000)
    snap = r.snapshot([alert(first=5000, last=7000)], ["eu"], {0: 100_000})
    (rng,) = [x for x in snap["ranges"] if x["partition"] == 0]
    assert (rng["start_offset"], rng["end_offset"]) == (4900, 7001)
    snap = r.snapshot([alert(first=5000, last=5100)], ["eu"], {0: 100_000})
    (rng,) = [x for x in snap["ranges"] if x["partition"] == 0]
    assert (rng["start_offset"], rng["end_offset"]) == (4900, 5900)


def test_empty_partitions_are_left_out():
    r = router()
    snap = r.snapshot([alert(partition=0, first=0, last=10)], ["eu"], {0: 20, 1: 0})
    assert [x["partition"] for x in snap["ranges"]] == [0]


# --- restart ---------------------------------------------------------------------------------


def test_restore_rebuilds_cooldown_budget_and_requested_alerts():
    r = router(max_in_flight=1)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)

    fresh = router(max_in_flight=1)
    restore(fresh, [req], [], T0 + 20)
    assert fresh.on_alert(alert(n=1), T0 + 20) == "duplicate"
    assert fresh.on_alert(alert(n=5), T0 + 20) == "busy"
    fresh.on_alert(alert("us", partition=1), T0 + 20)
    assert fresh.due(T0 + 40, ENDS) == [], "the restored request holds the only slot"

    done = router(max_in_flight=1)
    restore(done, [req], [result(req, "PROMOTED", "ok")], T0 + 20)
    assert done.in_flight == {}
    assert done.on_alert(alert(n=6), T0 + 30) == "cooldown"


def test_a_restored_request_escalates_with_its_alerts_and_keeps_its_escalation_count():
    r = router(max_escalations=1)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    (mod,) = r.on_result(result(req), T0 + 50)

    fresh = router(max_escalations=2)  # restarted while the ADAPTER request was in flight
    restore(fresh, [req], [], T0 + 20, alerts=[alert(n=1), alert("us", n=9)])
    assert fresh.on_result(result(req), T0 + 50) == [mod], "the same escalation as without the restart"

    after = router(max_escalations=1)  # restarted while the MODULE one was in flight: its 1 escalation is used
    restore(after, [req, mod], [result(req)], T0 + 60, alerts=[alert(n=1)])
    assert after.on_result(result(mod), T0 + 90) == []
    again = router(max_escalations=2)
    restore(again, [req, mod], [result(req)], T0 + 60, alerts=[alert(n=1)])
    (full,) = again.on_result(result(mod), T0 + 90)
    assert full["tier"] == "FULL" and full["alert_ids"] == req["alert_ids"]
    assert again.on_result(result(req), T0 + 95) == [], "a replayed result does not escalate twice"

    gone = router()  # the alerts aged out of the topic: nothing to plan the next tier from
    restore(gone, [req], [], T0 + 20, alerts=[])
    assert gone.on_result(result(req), T0 + 50) == [] and gone.in_flight == {}


def test_pending_sources_are_the_alerts_not_yet_requested():
    r = router()
    r.on_alert(alert("eu", n=1), T0, source=("alerts", 0, 7))
    r.on_alert(alert("us", n=2, partition=1), T0 + 9, source=("alerts", 1, 3))
    r.due(T0 + 10, ENDS)  # eu is due, us not yet
    assert r.pending_sources() == [("alerts", 1, 3)]


def test_forget_drops_pending_alerts_of_revoked_partitions():
    r = router()
    r.on_alert(alert("eu", n=1), T0, source=("alerts", 0, 7))
    r.on_alert(alert("eu", n=2), T0, source=("alerts", 1, 9))
    r.on_alert(alert("us", n=3, partition=1), T0, source=("alerts", 0, 8))
    assert r.forget({("alerts", 0)}) == 2
    assert list(r.pending) == [("m", "eu")] and r.pending_sources() == [("alerts", 1, 9)]


def test_a_planning_failure_drops_that_group_and_keeps_routing_the_others():
    from schemas.errors import ConfigError

    def picky(model, alerts, tier, n_seen):
        if any(a["slice"] == "bad" for a in alerts):
            raise ConfigError("manifest of m is unreadable")
        return planner(model, alerts, tier, n_seen)

    r = Router(defaults(coalesce_seconds=0, min_post_alert_events=0), picky, next_tier)
    r.on_alert(alert("bad", partition=0), T0)
    r.on_alert(alert("good", partition=1), T0)
    (req,) = r.due(T0, ENDS)
    assert req["slices"] == ["good"] and r.pending == {}
    assert r.counters["plan_failed"] == 1 and "unreadable" in r.errors[0]


# --- triage -------------------------------------------------------------------------------


def test_a_request_carries_its_alert_types():
    r = router()
    r.on_alert(alert(n=1), T0)
    r.on_alert(alert(n=2, feature="latency", first=1200, last=1700, alert_type="DATA_QUALITY"), T0 + 1)
    (req,) = r.due(T0 + 10, ENDS)
    assert req["alert_types"] == ["DATA_DRIFT", "DATA_QUALITY"]
    RETRAIN_REQUEST.decode(RETRAIN_REQUEST.encode(req))


def test_skipped_cools_down_but_a_performance_drift_still_gets_through():
    r = router(cooldown_seconds=600)
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    assert r.on_result(result(req, "SKIPPED", "triage: no significant harm"), T0 + 20) == []
    assert r.in_flight == {} and r.counters["skipped"] == 1
    assert r.cooldown_until[("m", "eu")] == T0 + 20 + 600
    assert r.on_alert(alert(n=2, first=3000, last=3500), T0 + 30) == "cooldown", "another data drift waits"
    perf = alert(n=3, first=3000, last=3500, alert_type="PERFORMANCE_DRIFT", feature=None)
    assert r.on_alert(perf, T0 + 30) == "pending"
    (job,) = r.due(T0 + 40, ENDS)
    assert job["alert_types"] == ["PERFORMANCE_DRIFT"] and job["alert_ids"] == [perf["alert_id"]]
    later = alert(n=4, first=6000, last=6500, alert_type="LABEL_DRIFT", feature=None)
    assert r.on_result(result(job, "PROMOTED", "ok"), T0 + 50) == []
    assert r.on_alert(later, T0 + 60) == "cooldown", "after a real job the cooldown holds for every alert"


def test_restore_remembers_a_skipped_slice():
    r = router()
    r.on_alert(alert(n=1), T0)
    (req,) = r.due(T0 + 10, ENDS)
    fresh = router()
    skipped = {**result(req, "SKIPPED", "no harm"), "finished_at": int((T0 + 20) * 1000)}
    restore(fresh, [req], [skipped], T0 + 30)
    assert fresh.in_flight == {} and ("m", "eu") in fresh.skipped_slices
    perf = alert(n=3, first=3000, last=3500, alert_type="PERFORMANCE_DRIFT", feature=None)
    assert fresh.on_alert(alert(n=2, first=3000, last=3500), T0 + 40) == "cooldown"
    assert fresh.on_alert(perf, T0 + 40) == "pending"
