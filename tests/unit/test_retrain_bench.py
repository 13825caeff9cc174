"""`driftctl bench retrain --quick --json`: one JSON line, the issue's targets met."""

from __future__ import annotations

import json

from deploy.cli import main


def test_bench_retrain_quick_json_meets_targets(capsys):
    assert main(["bench", "retrain", "--quick", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for key in ("compute_ratio", "recovery", "untouched_max_abs_delta", "selective", "full", "per_slice", "slices"):
        assert key in r
    assert r["tier"] == "ADAPTER" and r["modules_updated"] == [f"adapter.{r['drifted_slice']}"]
    sel, full = r["selective"], r["full"]
    assert sel["params_updated"] < full["params_updated"] == full["params_total"]
    assert sel["train_seconds"] / full["train_seconds"] == r["compute_ratio"]
    assert sel["metric_after"] < sel["metric_before"] and full["metric_after"] < full["metric_before"]
    assert r["compute_ratio"] <= 0.2, r
    assert r["recovery"] >= 0.9, r
    assert r["untouched_max_abs_delta"] == 0.0  # truly frozen: bit-identical predictions
    assert sel["gate"]["passed"] and r["targets_met"]
