"""Selective update (frozen = bit-identical, proven by hashes), splits, metrics and the gate."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from retrain_jobs.gate import GateConfig, gate
from retrain_jobs.registry import module_hashes
from retrain_jobs.selective import (
    IntegrityError,
    TrainConfig,
    auc,
    gain,
    log_loss,
    per_slice,
    predict,
    split_events,
    update,
)
from tests.unit.retrain_world import SETTINGS, bootstrapped_world

torch.set_num_threads(1)  # 2 shared cores; threads only add contention here


@pytest.fixture(scope="module")
def world():
    net, post = bootstrapped_world()
    return net, post


def test_split_is_seeded_order_free_and_disjoint():
    evs = [{"event_id": f"e{i}"} for i in range(2000)]
    a = split_events(evs, 0.25, 0.2, 1)
    b = split_events(list(reversed(evs)), 0.25, 0.2, 1)
    assert [sorted(e["event_id"] for e in part) for part in a] == [sorted(e["event_id"] for e in part) for part in b]
    assert sum(len(p) for p in a) == 2000 and 400 < len(a[2]) < 600
    assert split_events(evs, 0.25, 0.2, 2)[2] != a[2]


def test_metrics():
    y, p = np.array([0, 0, 1, 1.0]), np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(y, p) == pytest.approx(0.75)
    assert log_loss(y, y) < 1e-5
    assert gain("log_loss", 0.5, 0.3) == pytest.approx(0.2) and gain("auc", 0.5, 0.7) == pytest.approx(0.2)


def test_adapter_update_freezes_everything_else_bit_for_bit(world):
    base, (train, val, hold) = world
    net = copy.deepcopy(base)
    mods_before = module_hashes(base.module_map())
    d = [e for e in train if e["slice"] == "s1"]
    stats = update(net, ["adapter.s1"], d, [e for e in val if e["slice"] == "s1"], TrainConfig.incremental(SETTINGS))
    assert stats.cached_embeddings and stats.params_updated == sum(
        p.numel() for p in net.module_map()["adapter.s1"].parameters())
    after = module_hashes(net.module_map())
    assert {n for n in after if after[n] != mods_before[n]} == {"adapter.s1"}
    others = [e for e in hold if e["slice"] != "s1"]
    assert (predict(net, others) == predict(base, others)).all()  # untouched slices: bit-identical
    b, a = per_slice(base, hold, "log_loss"), per_slice(net, hold, "log_loss")
    assert a["s1"] < b["s1"] - 0.2 and all(a[s] == b[s] for s in b if s != "s1")


def test_a_frozen_module_that_moves_is_an_error(world):
    base, (train, _val, _) = world
    net = copy.deepcopy(base)
    net.adapters[2] = net.adapters[1]  # adapter.s1 and adapter.s0 now share weights
    with pytest.raises(IntegrityError, match=r"adapter\.s1"):
        update(net, ["adapter.s0"], [e for e in train if e["slice"] == "s0"], [], TrainConfig.incremental(SETTINGS))


def test_module_update_runs_frozen_upstream_without_cache(world):
    base, (train, _val, _) = world
    net = copy.deepcopy(base)
    d = [e for e in train if e["slice"] == "s1"]
    stats = update(net, ["adapter.s1", "encoder.x0"], d, [], TrainConfig(1e-3, 2, 64, 2, 1e-3, 1))
    assert not stats.cached_embeddings and stats.epochs <= 2
    changed = {n for n, h in module_hashes(net.module_map()).items() if h != module_hashes({n: base.module_map()[n]})[n]}
    assert changed <= {"adapter.s1", "encoder.x0"}


def test_gate_passes_and_names_each_failed_check(world):
    base, (train, val, hold) = world
    net = copy.deepcopy(base)
    update(net, ["adapter.s1"], [e for e in train if e["slice"] == "s1"], [e for e in val if e["slice"] == "s1"],
           TrainConfig.incremental(SETTINGS))
    ok = gate(base, net, hold, ["s1"], GateConfig.from_settings(SETTINGS))
    assert ok.passed and ok.reason.startswith("passed") and ok.other_slices_max_regression == 0.0
    assert ok.metric_after < ok.metric_before
    no_gain = gate(base, net, hold, ["s1"], GateConfig(min_gain=5.0))
    assert not no_gain.passed and no_gain.reason.startswith("min_gain: s1")
    slow = gate(base, net, hold, ["s1"], GateConfig(latency_budget_ms=1e-6))
    assert not slow.passed and slow.reason.startswith("latency:")
    thin = gate(base, net, hold, ["s1"], GateConfig(min_slice_events=10_000))
    assert not thin.passed and thin.reason.startswith("holdout:")
    trunk = copy.deepcopy(base)  # the shared trunk fitted to s1 alone hurts someone else
    update(trunk, ["trunk"], [e for e in train if e["slice"] == "s1"], [], TrainConfig(1e-2, 5, 64, 5, 0.0, 1))
    hurt = gate(base, trunk, hold, ["s1"], GateConfig(tolerance=0.0, min_gain=0.0))
    assert not hurt.passed and "tolerance: slice s" in hurt.reason and hurt.other_slices_max_regression > 0


def test_an_update_is_reproducible(world):
    base, (train, val, _) = world
    d, v = [e for e in train if e["slice"] == "s2"], [e for e in val if e["slice"] == "s2"]
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    cfg = TrainConfig(3e-3, 4, 64, 4, 1e-3, 5)
    update(a, ["adapter.s2"], d, v, cfg)
    update(b, ["adapter.s2"], d, v, cfg)
    assert module_hashes(a.module_map()) == module_hashes(b.module_map())
