"""The canary share: deterministic, near its fraction, nested, and only in CANARY on its slices."""

from __future__ import annotations

from retrain_jobs.routing import serves_candidate, serving_version


def test_share_is_deterministic_and_near_fraction():
    ids = [f"e-{i}" for i in range(20_000)]
    picked = [i for i in ids if serves_candidate(i, 0.1)]
    assert picked == [i for i in ids if serves_candidate(i, 0.1)]
    assert 0.09 < len(picked) / len(ids) < 0.11


def test_larger_fraction_is_a_superset_and_edges():
    ids = [f"x{i}" for i in range(5000)]
    small = {i for i in ids if serves_candidate(i, 0.05)}
    large = {i for i in ids if serves_candidate(i, 0.25)}
    assert small < large
    assert not any(serves_candidate(i, 0.0) for i in ids)
    assert all(serves_candidate(i, 1.0) for i in ids)


def test_serving_version_follows_the_update():
    canary = {"stage": "CANARY", "version": "v3", "current_version": "v2", "canary_fraction": 1.0, "slices": ["eu"]}
    assert serving_version(canary, "e1", "eu") == "v3"
    assert serving_version(canary, "e1", "us") == "v2"  # not one of the candidate's slices
    assert serving_version({**canary, "stage": "SHADOW"}, "e1", "eu") == "v2"
    assert serving_version({**canary, "canary_fraction": 0.0}, "e1", "eu") == "v2"
    assert serving_version({**canary, "stage": "PROMOTED", "current_version": "v3"}, "e1", "us") == "v3"
    assert serving_version(None, "e1", "eu") is None
