"""Rebasing a candidate onto a version promoted meanwhile: both slices' updates kept, the
candidate's slice predicted exactly as by the candidate; refused when shared modules moved."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from retrain_jobs.job import bootstrap
from retrain_jobs.rebase import rebase, rebase_blocker
from retrain_jobs.registry import Registry
from retrain_jobs.scenario import RetrainScenario
from retrain_jobs.selective import TrainConfig, predict, update
from schemas.settings import load_settings

torch.set_num_threads(1)
SETTINGS = load_settings(retrain_bootstrap_epochs=3, retrain_epochs=3)
SC = RetrainScenario(n_slices=3, pre_events=200, post_events=200, drifted="s1", seed=5, model="m")
PRE, POST = SC.events()


def candidate(reg: Registry, modules: list[str], slice_: str, rid: str) -> str:
    """A version of v0001 with ``modules`` trained on ``slice_`` (then nudged, so they surely moved)."""
    net, base = reg.load("m", "v0001")
    net = copy.deepcopy(net)
    evs = [e for e in POST if e["slice"] == slice_]
    update(net, modules, evs[:150], evs[150:], TrainConfig.incremental(SETTINGS))
    with torch.no_grad():
        for name in modules:
            for p in net.module_map()[name].parameters():
                p.add_(0.01)
    net.eval()
    return reg.save("m", net, parent_version=base.version, request_id=rid, modules_updated=modules,
                    result={"request_id": rid, "decision": "CANDIDATE"}).version


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path)
    bootstrap("m", PRE, reg, SETTINGS)
    return reg


def test_two_slices_adapters_rebase_and_keep_both_updates(registry):
    a = candidate(registry, ["adapter.s0"], "s0", "ra")
    b = candidate(registry, ["adapter.s1"], "s1", "rb")
    registry.promote("m", a, expect_current="v0001")
    assert rebase_blocker(registry, "m", b, a, ["s1"]) is None
    merged = rebase(registry, "m", b, a, ["s1"])
    assert merged.parent_version == a and merged.request_id == "rb" and merged.result["new_version"] == merged.version
    assert merged.metrics["rebased_from"] == b and registry.current_version("m") == a, "saved, not promoted"
    net_m, _ = registry.load("m", merged.version)
    net_a, _ = registry.load("m", a)
    net_b, _ = registry.load("m", b)
    s0 = [e for e in POST if e["slice"] == "s0"]
    s1 = [e for e in POST if e["slice"] == "s1"]
    assert np.array_equal(predict(net_m, s1), predict(net_b, s1)), "the candidate's slice: exactly the candidate"
    assert np.array_equal(predict(net_m, s0), predict(net_a, s0)), "the other update is kept"


def test_no_rebase_when_a_shared_module_moved_or_both_touched_one(registry):
    trunk = candidate(registry, ["trunk"], "s0", "rt")
    b = candidate(registry, ["adapter.s1"], "s1", "rb")
    assert "serve" in rebase_blocker(registry, "m", b, trunk, ["s1"])
    other = candidate(registry, ["adapter.s1"], "s2", "rc")
    assert "both changed ['adapter.s1']" in rebase_blocker(registry, "m", b, other, ["s1"])


def test_a_watch_follows_a_version_stacked_on_it_and_its_rollback_keeps_that_update(registry):
    from retrain_jobs.rebase import follow_blocker, revert

    a = candidate(registry, ["adapter.s0"], "s0", "ra")
    b = candidate(registry, ["adapter.s1"], "s1", "rb")
    registry.promote("m", a, expect_current="v0001")
    stacked = rebase(registry, "m", b, a, ["s1"]).version
    registry.promote("m", stacked, expect_current=a)
    assert follow_blocker(registry, "m", a, stacked, ["s0"]) is None, "a's slice is predicted as before"
    undone = revert(registry, "m", a, stacked, ["s0"])
    assert undone.parent_version == stacked and undone.metrics["reverted"] == a
    nets = {v: registry.load("m", v)[0] for v in ("v0001", b, undone.version)}
    s0 = [e for e in POST if e["slice"] == "s0"]
    s1 = [e for e in POST if e["slice"] == "s1"]
    assert np.array_equal(predict(nets[undone.version], s0), predict(nets["v0001"], s0)), "a's update undone"
    assert np.array_equal(predict(nets[undone.version], s1), predict(nets[b], s1)), "b's update kept"
