"""run_job: selective update end to end on a registry, the gate's decision, idempotency."""

from __future__ import annotations

import pytest
import torch

from retrain_jobs.job import bootstrap, run_job
from retrain_jobs.registry import Registry, RegistryError
from retrain_jobs.scenario import RetrainScenario
from schemas.codec import RETRAIN_RESULT
from schemas.settings import load_settings

torch.set_num_threads(1)
SETTINGS = load_settings(retrain_bootstrap_epochs=8, retrain_epochs=25, rollout_enabled=False)  # promote directly
SC = RetrainScenario(n_slices=4, pre_events=500, post_events=500, drifted="s1", seed=11, model="m")
PRE, POST = SC.events()


def request(rid="r1", tier="ADAPTER", modules=("adapter.s1",), slices=("s1",), model="m"):
    return {"request_id": rid, "alert_ids": ["a1"], "model": model, "slices": list(slices), "modules": list(modules),
            "tier": tier, "snapshot": {"topic": "t", "ranges": [{"partition": 0, "start_offset": 0, "end_offset": 9}],
                                       "slice_filter": list(slices), "labelled_only": True},
            "priority": 1, "policy_version": "p1", "created_at": 1}


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path)
    bootstrap("m", PRE, reg, SETTINGS)
    return reg


def test_with_rollout_a_gate_passed_version_is_a_candidate_not_current(registry):
    settings = SETTINGS.model_copy(update={"rollout_enabled": True})
    result = run_job(request(), POST, registry, settings)
    assert result["decision"] == "CANDIDATE", result["reason"]
    assert (result["parent_version"], result["new_version"]) == ("v0001", "v0002")
    assert registry.current_version("m") == "v0001", "the rollout, not the job, moves the pointer"
    assert registry.manifest("m", "v0002").result["decision"] == "CANDIDATE"
    assert run_job(request(), POST, registry, settings) == result and len(registry.versions("m")) == 2


def test_adapter_job_promotes_only_the_adapter_and_is_idempotent(registry):
    result = run_job(request(), POST, registry, SETTINGS)
    assert result["decision"] == "PROMOTED", result["reason"]
    assert (result["parent_version"], result["new_version"]) == ("v0001", "v0002")
    assert result["modules_updated"] == ["adapter.s1"] and 0 < result["params_updated"] < result["params_total"]
    assert result["metric_name"] == "log_loss" and result["metric_after"] < result["metric_before"]
    assert result["other_slices_max_regression"] == 0.0 and result["latency_ms"] > 0
    assert RETRAIN_RESULT.decode(RETRAIN_RESULT.encode(result))["request_id"] == "r1"
    v1, v2 = registry.manifest("m", "v0001"), registry.manifest("m", "v0002")
    moved = {n for n in v1.modules if v1.modules[n]["sha256"] != v2.modules[n]["sha256"]}
    assert moved == {"adapter.s1"} and v2.request_id == "r1" and v2.snapshot["topic"] == "t"
    assert registry.current_version("m") == "v0002"
    again = run_job(request(), POST, registry, SETTINGS)
    assert again == result
    assert len(registry.versions("m")) == 2
    assert [e["action"] for e in registry.log("m")] == ["PROMOTED", "PROMOTED"]


def test_crash_between_save_and_promote_is_finished_not_retrained(registry, monkeypatch):
    calls = []

    def crash(self, model, version, **kw):
        calls.append(version)
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(Registry, "promote", crash)
        with pytest.raises(KeyboardInterrupt):
            run_job(request("r2"), POST, registry, SETTINGS)
    assert calls == ["v0002"] and registry.current_version("m") == "v0001"
    result = run_job(request("r2"), POST, registry, SETTINGS)
    assert result["decision"] == "PROMOTED" and result["new_version"] == "v0002"
    assert len(registry.versions("m")) == 2 and registry.current_version("m") == "v0002"


def test_rejected_job_keeps_the_current_version(registry):
    strict = load_settings(retrain_bootstrap_epochs=8, retrain_epochs=25, retrain_min_gain=5.0)
    result = run_job(request("r3"), POST, registry, strict)
    assert result["decision"] == "REJECTED" and result["reason"].startswith("min_gain: s1")
    assert result["new_version"] is None and registry.current_version("m") == "v0001"
    assert len(registry.versions("m")) == 1
    assert run_job(request("r3"), POST, registry, SETTINGS) == result  # the decision stands on a re-run
    nodata = run_job(request("r4", model="other"), POST, registry, SETTINGS)
    assert nodata["decision"] == "REJECTED" and nodata["reason"].startswith("data:")
    bad = run_job(request("r5", modules=("encoder.nope",)), POST, registry, SETTINGS)
    assert bad["decision"] == "REJECTED" and "unknown module" in bad["reason"]


def test_first_job_of_a_model_bootstraps_it_on_the_other_slices(tmp_path):
    reg = Registry(tmp_path)
    quick = load_settings(retrain_bootstrap_epochs=4, retrain_epochs=10, rollout_enabled=False)
    result = run_job(request("r6"), POST, reg, quick)
    boot = reg.manifest("m", "v0001")
    assert boot.request_id == "bootstrap:r6" and "adapter.s1" not in boot.modules  # s1 served by the default
    assert result["parent_version"] == "v0001" and result["decision"] == "PROMOTED", result["reason"]
    new = reg.manifest("m", "v0002")
    assert "adapter.s1" in new.modules  # its own adapter now, copied from the default, which stays as it was
    assert new.modules["adapter._default"]["sha256"] == boot.modules["adapter._default"]["sha256"]


def test_full_tier_updates_every_module_on_every_slice(registry):
    quick = load_settings(retrain_bootstrap_epochs=8, retrain_epochs=3, retrain_tolerance=1.0, rollout_enabled=False)
    result = run_job(request("r7", tier="FULL", modules=("*",)), POST, registry, quick)
    assert result["params_updated"] == result["params_total"]
    assert set(result["modules_updated"]) == set(registry.manifest("m", "v0001").modules)


def test_a_job_overtaken_by_another_promotion_redoes_itself_on_the_new_version(registry, monkeypatch):
    from retrain_jobs import job

    real_update, calls = job.update, []

    def update_while_someone_promotes(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # another worker finishes a job for another slice meanwhile
            assert run_job(request("other", modules=("adapter.s2",), slices=("s2",)), POST, registry,
                           SETTINGS)["decision"] == "PROMOTED"
        return real_update(*args, **kwargs)

    monkeypatch.setattr(job, "update", update_while_someone_promotes)
    result = run_job(request("r8"), POST, registry, SETTINGS)
    assert result["decision"] == "PROMOTED" and result["parent_version"] == "v0002", result["reason"]
    newest = registry.manifest("m", result["new_version"])
    other = registry.manifest("m", "v0002")
    assert newest.modules["adapter.s2"]["sha256"] == other.modules["adapter.s2"]["sha256"]  # nothing lost
    assert len(calls) == 3  # first attempt, the other job, the redo


def test_a_job_that_loses_the_promotion_race_redoes_its_update_on_the_winner(registry, monkeypatch):
    """Two workers, two slices of one model: the one that promotes second rebases instead of
    rejecting, so both slices' updates end up in the current version."""
    other = run_job(request("r-other", modules=("adapter.s2",), slices=("s2",)), POST, registry, SETTINGS)
    assert other["new_version"] == "v0002"
    registry.promote("m", "v0001")  # as if r-other had not landed yet when r-late loaded its parent
    real_promote = Registry.promote
    raced = []

    def promote_after_the_other(self, model, version, **kw):
        if not raced:  # the other worker's promotion lands just before ours
            raced.append(version)
            real_promote(self, model, "v0002")
        return real_promote(self, model, version, **kw)

    monkeypatch.setattr(Registry, "promote", promote_after_the_other)
    result = run_job(request("r-late"), POST, registry, SETTINGS)
    assert result["decision"] == "PROMOTED", result["reason"]
    assert raced == ["v0003"] and result["parent_version"] == "v0002" and result["new_version"] == "v0004"
    current = registry.manifest("m", registry.current_version("m"))
    v1 = registry.manifest("m", "v0001")
    moved = {n for n in v1.modules if v1.modules[n]["sha256"] != current.modules[n]["sha256"]}
    assert moved == {"adapter.s1", "adapter.s2"}, "the winner's update is kept, ours is redone on top"
    assert registry.find_request("m", "r-late").version == "v0004"


def test_a_job_that_always_loses_the_race_is_rejected_as_stale(registry, monkeypatch):
    def always_moved(self, model, version, **kw):
        raise RegistryError(f"{model}: current version moved")

    monkeypatch.setattr(Registry, "promote", always_moved)
    result = run_job(request("r-stale"), POST, registry, SETTINGS)
    assert result["decision"] == "REJECTED" and result["reason"].startswith("stale parent")
    assert result["new_version"] is None and registry.decision("m", "r-stale") == result


def test_a_first_version_from_the_snapshot_alone_prefers_its_events_from_before_the_onset():
    from retrain_jobs.job import MIN_REFERENCE_EVENTS, onset_time, snapshot_reference

    assert onset_time(POST, ["s1"]) == min(e["event_time"] for e in POST if e["slice"] == "s1")
    assert onset_time(POST, ["nope"]) is None
    older = [e for e in PRE if e["slice"] != "s1"][-300:]  # other partitions' ranges reach back further
    snap = older + POST
    ref = snapshot_reference(snap, ["s1"])
    assert len(ref) >= MIN_REFERENCE_EVENTS and ref == [e for e in snap if e["event_time"] < onset_time(POST, ["s1"])]
    assert older[0] in ref and older[-1] in ref
    assert {e["slice"] for e in snapshot_reference(POST, ["s1"])} == {"s0", "s2", "s3"}  # none before: the others
    only = [e for e in POST if e["slice"] == "s1"]
    assert snapshot_reference(only, ["s1"]) == only[: len(only) // 2]  # nothing else: the earliest half


def test_a_module_tier_job_updates_the_modules_the_gradient_evidence_picks(registry):
    """Of the adapter and trunk a MODULE request allows, the concept change's loss sits in the
    adapter: only it is trained, and the scores are in the result and the manifest."""
    result = run_job(request("r-mod", tier="MODULE", modules=("adapter.s1", "trunk")), POST, registry, SETTINGS)
    assert set(result["module_scores"]) == {"adapter.s1", "trunk"}
    assert result["module_scores"]["adapter.s1"] > 0.8 and result["modules_updated"] == ["adapter.s1"]
    assert result["decision"] == "PROMOTED" and result["cause"] == "GATE_PASSED", result["reason"]
    assert {"gate.ece_before", "gate.ece_after", "gate.log_loss_before"} <= set(result["checks"])
    manifest = registry.manifest("m", result["new_version"])
    assert manifest.metrics["module_scores"] == result["module_scores"]
    assert RETRAIN_RESULT.decode(RETRAIN_RESULT.encode(result))["module_scores"] == result["module_scores"]
