"""`driftctl bench retrain --quick --json`: one JSON line, the issue's targets met."""

from __future__ import annotations

import json

import pytest

from deploy.cli import main


def test_bench_retrain_quick_json_meets_targets(capsys):
    assert main(["bench", "retrain", "--quick", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for key in ("compute_ratio", "recovery", "untouched_max_abs_delta", "selective", "full", "per_slice", "slices"):
        assert key in r
    adapter = f"adapter.{r['drifted_slice']}"
    assert r["allowed_modules"] == [adapter, "trunk"], "the dependency map allows the adapter and the trunk"
    assert r["modules_updated"] == [adapter], "the gradient evidence picks the adapter alone"
    assert sum(r["module_scores"].values()) == pytest.approx(1.0) and r["module_scores"][adapter] > 0.8
    sel, rule, full = r["selective"], r["rule_based"], r["full"]
    assert rule["modules_updated"] == [adapter, "trunk"], "side by side: what the rules alone would update"
    assert sel["params_updated"] < rule["params_updated"] < full["params_updated"] == full["params_total"]
    assert sel["cpu_seconds"] / full["cpu_seconds"] == r["compute_ratio"]
    assert sel["metric_after"] < sel["metric_before"] and full["metric_after"] < full["metric_before"]
    assert r["compute_ratio"] <= 0.2, r  # the quick scenario is small; the full one is held to 0.05
    assert r["recovery"] >= 0.95, r
    assert r["untouched_max_abs_delta"] == 0.0  # truly frozen: bit-identical predictions
    assert rule["untouched_max_abs_delta"] > 0.0, "a trunk update moves the other slices"
    assert sel["gate"]["passed"] and sel["gate"]["cause"] == "GATE_PASSED"
