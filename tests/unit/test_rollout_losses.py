"""Each stage change carries the live losses it rests on, into the ModelUpdate and its metrics."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from retrain_jobs.rollout import Rollout, RolloutConfig
from retrain_jobs.rollout_store import stage_update
from runtime import metrics
from schemas.codec import MODEL_UPDATE


def test_a_transition_carries_the_mean_losses_of_its_phase():
    r = Rollout(RolloutConfig(canary_fraction=0.1, canary_events=50, watch_events=0), "m", "v2", "v1", ["eu"], "r1")
    start = r.start()
    assert (start.candidate_loss, start.incumbent_loss) == (None, None)  # nothing scored yet
    pairs, t = [], None
    while t is None:  # the candidate clearly better: shadow wins
        i = len(pairs)
        pairs.append((0.9 + 0.01 * (i % 3), 0.3 + 0.01 * (i % 5)))
        t = r.observe(f"e{i}", *pairs[-1])
    assert t.kind == "CANARY" and t.events == len(pairs)
    assert t.incumbent_loss == pytest.approx(sum(p[0] for p in pairs) / len(pairs))
    assert t.candidate_loss == pytest.approx(sum(p[1] for p in pairs) / len(pairs))
    t2, n = None, 0
    while t2 is None:  # the canary's own events, not the shadow's
        t2 = r.observe(f"c{n}", 0.5, 0.4)
        n += 1
    assert t2.stage == "PROMOTED" and t2.events == n == 50
    assert (t2.candidate_loss, t2.incumbent_loss) == pytest.approx((0.4, 0.5))
    update = stage_update(r, t2.stage, "v2", 1_790_000_000_000, t2)
    decoded = MODEL_UPDATE.decode(MODEL_UPDATE.encode(update))
    assert (decoded["candidate_loss"], decoded["incumbent_loss"]) == pytest.approx((0.4, 0.5))
    before = REGISTRY.get_sample_value("driftwatch_rollout_promotions_total", {"model": "m"}) or 0.0
    metrics.observe_model_update(decoded)
    assert REGISTRY.get_sample_value("driftwatch_rollout_promotions_total", {"model": "m"}) == before + 1
