"""The rollout bench's summary on hand-made runs (the bench itself runs as `driftctl bench rollout`)."""

from __future__ import annotations

import io

import numpy as np

from deploy.bench_rollout import _drive, _summary
from retrain_jobs.rollout import RolloutConfig


def test_drive_and_summary_report_decisions_false_promotions_and_regret():
    config = RolloutConfig(canary_events=50, watch_events=50, max_shadow_events=300)
    events = [{"event_id": f"e{i}"} for i in range(2000)]
    rng = np.random.default_rng(0)
    inc = 1.2 + rng.normal(0, 0.2, 2000)
    good = _drive(config, events, inc, inc - 0.4, "good")
    bad = _drive(config, events, inc, inc + 0.4, "bad")
    null = _drive(config, events, inc, inc.copy(), "null")
    assert (good["decision"], bad["decision"], null["decision"]) == ("PROMOTED", "REJECTED", "REJECTED")
    assert good["promoted"] and not bad["promoted"] and null["events_to_end"] == 300
    assert good["canary_regret"] < 0 and good["stages"] == ["SHADOW", "CANARY", "WATCH", "WATCH_PASSED"]
    out = io.StringIO()
    s = _summary(config, [{"seed": 1, "lasting": good, "reverting": bad, "reverted": bad}], [null, {**null, "promoted": True}], False, out)
    assert (s["lasting_decision"], s["reverting_decision"], s["false_promotions"], s["null_runs"]) == (
        "PROMOTED", "REJECTED", 1, 2)
    assert s["events_to_decision"]["lasting"] == good["events_to_decision"] and not s["targets_met"]  # 1/2 > alpha
    assert "false promotions" in out.getvalue()
