"""Triage before training: the one-sided Welch test on per-event log-loss, its error rate, and
its use in the retrain worker (a harmless data drift ends SKIPPED with no job)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from retrain_jobs.job import bootstrap
from retrain_jobs.registry import Registry
from retrain_jobs.scenario import RetrainScenario
from retrain_jobs.triage import (
    TriageConfig,
    needs_triage,
    pre_onset_snapshot,
    triage,
    triage_model,
    triage_request,
    welch_greater,
)
from retrain_jobs.worker import RetrainWorker
from schemas.codec import RETRAIN_RESULT
from schemas.retraining import Cause
from schemas.settings import load_settings
from tests.fakes import FakeConsumer, FakeProducer

torch.set_num_threads(1)
SETTINGS = load_settings(retrain_bootstrap_epochs=8, retrain_epochs=25)
SC = RetrainScenario(n_slices=4, pre_events=1600, post_events=800, drifted="s1", seed=11, model="m")
PRE, POST = SC.events()


def test_welch_matches_scipy_and_the_interval_holds_the_delta():
    rng = np.random.default_rng(1)
    a, b = rng.exponential(0.8, 300), rng.exponential(0.6, 200)
    delta, lo, hi, p = welch_greater(a, b, 0.0, 0.05)
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    assert lo < delta < hi and delta == pytest.approx(a.mean() - b.mean())
    assert welch_greater(a, b, 0.1, 0.05)[3] > p, "a margin makes harm harder to show"


def test_harm_is_found_and_no_harm_is_skipped_with_the_numbers():
    rng = np.random.default_rng(2)
    base = rng.exponential(0.5, 400)
    cfg = TriageConfig(alpha=0.01, margin=0.01, min_events=30)
    hurt = triage(base, base + rng.exponential(0.3, 400), cfg)
    assert hurt.harmful and hurt.decided and hurt.delta > 0.2 and hurt.p_value < 0.01
    same = triage(base, rng.exponential(0.5, 400), cfg)
    assert not same.harmful and same.decided and same.ci_low < 0.05
    assert "no significant harm" in same.reason and "Welch" in same.reason and f"{same.delta:+.4f}" in same.reason
    assert same.checks()["triage.n_after"] == 400.0 and same.checks()["triage.p_value"] == same.p_value
    thin = triage(base[:10], base[:200], cfg)
    assert thin.harmful and not thin.decided, "too few events before: train, the gate judges"


def test_the_error_rate_is_alpha_when_the_harm_is_exactly_the_margin():
    """Under H0 at its boundary (true delta = margin), the test starts a job in about alpha of
    the cases (2,000 seeded replications of skewed per-event losses)."""
    rng = np.random.default_rng(3)
    cfg = TriageConfig(alpha=0.05, margin=0.02, min_events=30)
    hits = sum(triage(rng.exponential(0.5, 300), rng.exponential(0.5, 300) + 0.02, cfg).harmful for _ in range(2000))
    assert 0.03 < hits / 2000 < 0.07, hits


def test_only_feature_alerts_alone_are_triaged():
    assert needs_triage(["DATA_DRIFT"]) and needs_triage(["DATA_DRIFT", "DATA_QUALITY"])
    assert not needs_triage(["DATA_DRIFT", "PERFORMANCE_DRIFT"]) and not needs_triage(["LABEL_DRIFT"])
    assert not needs_triage([]), "an older router's request (no alert types) trains"


def test_pre_onset_snapshot_reads_what_precedes_each_range():
    snap = {"topic": "t", "ranges": [{"partition": 0, "start_offset": 500, "end_offset": 900},
                                     {"partition": 1, "start_offset": 0, "end_offset": 50}],
            "slice_filter": ["s1"], "labelled_only": True}  # fmt: skip
    pre = pre_onset_snapshot(snap, ["s1"], 200)
    assert pre["ranges"] == [{"partition": 0, "start_offset": 300, "end_offset": 500}]
    assert pre["slice_filter"] == ["s1"] and pre["labelled_only"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("reg"))
    bootstrap("m", [e for e in PRE if int(e["event_id"].split("-")[1]) < 400], reg, SETTINGS)
    return reg


def held_out(slice_):
    """The slice's pre-drift events the model did not train on, and its post-drift events
    (triage keeps the holdout split's quarter of each)."""
    before = [e for e in PRE if e["slice"] == slice_ and int(e["event_id"].split("-")[1]) >= 400]
    return before, [e for e in POST if e["slice"] == slice_]


def test_the_model_scores_a_concept_change_as_harm_and_a_stable_slice_as_none(registry):
    net, _ = registry.load("m")
    cfg = TriageConfig.from_settings(SETTINGS)
    hurt = triage_model(net, *held_out("s1"), cfg)
    assert hurt.harmful and hurt.decided and hurt.delta > 0.3, hurt.reason
    calm = triage_model(net, *held_out("s2"), cfg)
    assert not calm.harmful and calm.decided, calm.reason


def request(slice_, types=("DATA_DRIFT",), rid=None):
    return {"request_id": rid or f"r-{slice_}-{'-'.join(types)}", "alert_ids": ["a1"], "model": "m",
            "slices": [slice_], "modules": [f"adapter.{slice_}"], "tier": "ADAPTER",
            "snapshot": {"topic": "t", "ranges": [{"partition": 0, "start_offset": 1000, "end_offset": 2000}],
                         "slice_filter": [slice_], "labelled_only": True},
            "priority": 1, "policy_version": "p1", "created_at": 1, "alert_types": list(types)}  # fmt: skip


def test_triage_request_skips_a_harmless_drift_and_records_it(registry):
    reads = []

    def read(settings, snap):
        reads.append(snap)
        return held_out(snap["slice_filter"][0])[0]

    req = request("s2")
    verdict, skipped = triage_request(SETTINGS, req, held_out("s2")[1], registry, read)
    assert reads[0]["ranges"] == [{"partition": 0, "start_offset": 0, "end_offset": 1000}]
    assert skipped["decision"] == "SKIPPED" and skipped["cause"] == Cause.NO_HARM == "NO_HARM"
    assert skipped["train_seconds"] == 0.0 and skipped["checks"]["triage.delta"] == verdict.delta
    assert skipped["checks"]["triage.ci_low"] <= verdict.delta <= skipped["checks"]["triage.ci_high"]
    assert skipped["parent_version"] == "v0001" and skipped["reason"].startswith("triage: no significant harm")
    RETRAIN_RESULT.decode(RETRAIN_RESULT.encode(skipped))
    assert registry.decision("m", req["request_id"]) == skipped, "a re-delivery returns the same decision"
    assert triage_request(SETTINGS, req, [], registry, read) == (None, None)
    verdict, none = triage_request(SETTINGS, request("s1"), held_out("s1")[1], registry, read)
    assert verdict.harmful and none is None
    assert triage_request(SETTINGS, request("s2", ("PERFORMANCE_DRIFT",)), [], registry, read) == (None, None)
    off = load_settings(retrain_triage=False)
    assert triage_request(off, request("s2", rid="r-off"), held_out("s2")[1], registry, read) == (None, None)


def test_the_worker_skips_without_a_job_and_trains_on_harm(registry):
    jobs = []

    def job(req, events, reg, settings):
        jobs.append(req["request_id"])
        return {"request_id": req["request_id"], "decision": "PROMOTED", "checks": {"gate.ece_after": 0.1}}

    def read(settings, snap):
        s = snap["slice_filter"][0]
        before, after = held_out(s)
        return before if snap["ranges"][0]["start_offset"] == 0 else after

    from retrain_jobs.triage import triage_request as real_triage

    w = RetrainWorker(SETTINGS, consumer=FakeConsumer([]), producer=FakeProducer(RETRAIN_RESULT), read_snapshot=read,
                      run_job=job, registry=registry, triage=real_triage)  # fmt: skip
    skipped = w.compute(request("s2", rid="w-s2"))
    assert skipped["decision"] == "SKIPPED" and jobs == [], "no training job for a harmless drift"
    trained = w.compute(request("s1", rid="w-s1"))
    assert jobs == ["w-s1"] and trained["decision"] == "PROMOTED"
    assert trained["checks"]["triage.delta"] > 0.3 and trained["checks"]["gate.ece_after"] == 0.1
