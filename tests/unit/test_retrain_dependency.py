"""Dependency map: alerts -> smallest module set and tier."""

from __future__ import annotations

import pytest

from retrain_jobs.dependency import Plan, next_tier, plan
from schemas.errors import ConfigError

MANIFEST = {"modules": {
    "encoder.amount": {"reads": ["amount"], "serves": ["*"]},
    "encoder.geo": {"reads": ["lat", "lon"], "serves": ["*"]},
    "trunk": {"reads": ["amount", "lat", "lon"], "serves": ["*"]},
    "adapter._default": {"reads": [], "serves": ["*"]},
    **{f"adapter.s{i}": {"reads": [], "serves": [f"s{i}"]} for i in range(6)},
}}


def alert(kind, s, feature=None):
    return {"model": "m", "alert_type": kind, "slice": s, "feature": feature, "severity": "HIGH"}


def test_performance_and_label_drift_map_to_the_slice_adapter():
    assert plan(MANIFEST, [alert("PERFORMANCE_DRIFT", "s1")]) == Plan("ADAPTER", ("adapter.s1",), ("s1",))
    assert plan(None, [alert("LABEL_DRIFT", "s2", "label")]) == Plan("ADAPTER", ("adapter.s2",), ("s2",))
    assert plan(MANIFEST, [alert("PERFORMANCE_DRIFT", "s1")], tier="MODULE").modules == ("adapter.s1", "trunk")


def test_data_drift_starts_at_the_adapter_and_adds_the_encoder_on_escalation():
    a = [alert("DATA_DRIFT", "s1", "lat")]
    assert plan(MANIFEST, a) == Plan("ADAPTER", ("adapter.s1",), ("s1",))
    assert plan(MANIFEST, a, tier="MODULE").modules == ("adapter.s1", "encoder.geo")  # the group reading lat
    assert plan(None, [alert("DATA_QUALITY", "s1", "amount")], tier="MODULE").modules == (
        "adapter.s1", "encoder.amount")


def test_same_drift_in_most_slices_is_broader_and_full_only_when_asked():
    many = [alert("DATA_DRIFT", f"s{i}", "amount") for i in range(4)]  # 4 of 6 slices
    p = plan(MANIFEST, many)  # defaults: at least 60% of the slices seen and at least 3 slices
    assert p.tier == "MODULE"
    assert set(p.modules) == {"adapter.s0", "adapter.s1", "adapter.s2", "adapter.s3", "encoder.amount", "trunk"}
    assert plan(MANIFEST, many[:3]).tier == "ADAPTER"  # 3 of 6 < 60%
    assert plan(MANIFEST, many[:3], broad_share=0.5).tier == "MODULE"
    assert plan(None, many[:2], n_slices_seen=3).tier == "ADAPTER"  # 2 slices < broad_min_slices
    assert plan(None, many[:2], n_slices_seen=3, broad_min_slices=2).tier == "MODULE"
    assert plan(MANIFEST, many, broad_share=0.9).tier == "ADAPTER"
    full = plan(MANIFEST, many, tier="FULL")
    assert full.tier == "FULL" and set(full.modules) == set(MANIFEST["modules"])
    assert plan(None, many, tier="FULL").modules == ("*",)


def test_tiers_and_input_checks():
    assert [next_tier("ADAPTER"), next_tier("MODULE"), next_tier("FULL")] == ["MODULE", "FULL", None]
    with pytest.raises(ConfigError, match="valid: ADAPTER, MODULE, FULL"):
        next_tier("BIG")
    with pytest.raises(ConfigError, match="one model"):
        plan(None, [alert("DATA_DRIFT", "a", "x"), {**alert("DATA_DRIFT", "a", "x"), "model": "n"}])
    with pytest.raises(ConfigError):
        plan(None, [])
