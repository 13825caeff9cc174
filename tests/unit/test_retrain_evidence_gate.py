"""Modules chosen by gradient evidence, and the stricter gate (calibration, fairness) with its
own config object: every failed check named with its numbers, and a typed cause."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from retrain_jobs.evidence import choose_modules, module_scores
from retrain_jobs.gate import GateConfig, expected_calibration_error, gate, group_error_gap
from retrain_jobs.registry import module_hashes
from retrain_jobs.selective import TrainConfig, update
from schemas.retraining import Cause
from schemas.settings import load_settings
from tests.unit.retrain_world import SETTINGS, bootstrapped_world

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world():
    net, post = bootstrapped_world()
    net.eval()
    return net, post


def test_scores_are_shares_of_one_backward_pass_and_change_nothing(world):
    net, (train, _, _) = world
    before = module_hashes(net.module_map())
    drifted = [e for e in train if e["slice"] == "s1"]
    scores = module_scores(net, ["adapter.s1", "trunk", "encoder.x0"], drifted)
    assert sum(scores.values()) == pytest.approx(1.0) and all(v >= 0 for v in scores.values())
    assert max(scores, key=scores.get) == "adapter.s1", scores  # the concept change sits in the slice's head
    assert module_hashes(net.module_map()) == before and all(p.grad is None for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters()) and not net.training
    assert module_scores(net, ["trunk"], []) == {"trunk": 1.0}


def test_the_fewest_modules_carrying_the_share_are_chosen():
    scores = {"adapter.s1": 0.7, "trunk": 0.2, "encoder.x0": 0.1}
    assert choose_modules(scores, 0.6) == ["adapter.s1"]
    assert choose_modules(scores, 0.8) == ["adapter.s1", "trunk"]
    assert choose_modules(scores, 1.0) == ["adapter.s1", "encoder.x0", "trunk"]
    assert choose_modules({"b": 0.5, "a": 0.5}, 0.5) == ["a"], "ties broken by name"


def test_ece_and_group_gap():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1.0])
    assert expected_calibration_error(y, np.full(8, 0.5), 10) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(8, 0.9), 10) == pytest.approx(0.4)
    events = [{"label": int(v), "categorical": {"g": "a" if i < 4 else "b"}} for i, v in enumerate(y)]
    p = np.array([0.1, 0.9, 0.2, 0.8, 0.2, 0.8, 0.9, 0.1])  # group a all right, group b all wrong
    assert group_error_gap(events, p, "g", 2) == pytest.approx(1.0)
    assert group_error_gap(events, p, "g", 5) == 0.0, "groups under the minimum do not count"


def test_the_gate_rejects_a_worse_calibrated_update_and_names_every_failed_check(world):
    base, (train, val, hold) = world
    good = copy.deepcopy(base)
    update(good, ["adapter.s1"], [e for e in train if e["slice"] == "s1"], [e for e in val if e["slice"] == "s1"],
           TrainConfig.incremental(SETTINGS))
    good.eval()
    cfg = GateConfig.from_settings(SETTINGS)
    ok = gate(base, good, hold, ["s1"], cfg)
    assert ok.passed and ok.cause == Cause.GATE_PASSED and ok.checks["gate.ece_after"] < ok.checks["gate.ece_before"]
    sharp = copy.deepcopy(good)  # the same ranking, but overconfident: logits x 4
    with torch.no_grad():
        last = sharp.module_map()["adapter.s1"][-1]
        last.weight.mul_(4.0)
        last.bias.mul_(4.0)
    bad = gate(good, sharp, hold, ["s1"], GateConfig(min_gain=-10.0, fairness_feature="device", fairness_tolerance=-1.0))
    assert not bad.passed and bad.cause == Cause.CALIBRATION
    assert "calibration: ECE (10 bins) on ['s1']" in bad.reason and "fairness: error-rate gap between device" in bad.reason
    assert bad.checks["gate.ece_after"] - bad.checks["gate.ece_before"] > 0.02
    assert f"{bad.checks['gate.ece_after']:.4f}" in bad.reason and "gate.fairness_gap_after" in bad.checks
    every = gate(base, good, hold, ["s1"], GateConfig(min_gain=5.0, calibration_tolerance=-1.0, latency_budget_ms=1e-9))
    assert every.cause == Cause.MIN_GAIN and [part.split(":")[0] for part in every.reason.split("; ")] == [
        "min_gain", "calibration", "latency"]
    assert "gate.fairness_gap_before" not in ok.checks, "no fairness check unless a feature is named"


def test_gate_config_comes_from_the_settings():
    cfg = GateConfig.from_settings(load_settings(retrain_fairness_feature="plan", retrain_calibration_tolerance=0.05))
    assert cfg.fairness_feature == "plan" and cfg.calibration_tolerance == 0.05 and cfg.metric == "log_loss"
