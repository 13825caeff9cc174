"""``driftctl bench rollout``: the release state machine on seeded scenarios with real models.

Per seed (:mod:`retrain_jobs.scenario`, 4 slices, slice s1's concept changes):

1. the incumbent is fitted on the pre-drift events of every slice; the candidate is the
   incumbent with s1's adapter updated on s1's first ``TRAIN_EVENTS`` post-drift events (the
   training snapshot), like a retrain job's ADAPTER tier;
2. the live events are s1's post-drift events after the snapshot, scored by both versions
   (per-event log loss), fed to :class:`retrain_jobs.rollout.Rollout` with the configured
   ``rollout_*`` settings (shadow, canary, watch) until it ends:

   a. **lasting**: the new concept stays: expected PROMOTED (after shadow, canary and watch);
   b. **reverting**: the old concept returns ``REVERT_AFTER`` events after the snapshot (same
      inputs, same candidate): expected REJECTED in shadow or ROLLED_BACK by canary or watch;
      also **reverted**: it is back as the snapshot ends (expected REJECTED in shadow).

3. **null** (``null_runs`` seeded runs): a candidate that is no better. The incumbent's own
   predictions on s0's live events, with two independent draws of logit noise
   (N(0, ``NULL_NOISE``)) as "incumbent" and "candidate": exchangeable, so the paired loss
   difference has mean exactly 0, the hardest case the false-promotion guarantee covers.
   Every run that reaches PROMOTED counts as a false promotion; the bound is ``rollout_alpha``.

Printed: the decision and events-to-decision per scenario (paired events from the start of the
shadow to the decision, and to the rollout's end), false promotions, and the canary regret (the
candidate's extra log loss summed over the events it served; negative = it gained).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import sys
from collections import Counter
from typing import Any, TextIO

import numpy as np
import torch

from retrain_jobs.model import model_class
from retrain_jobs.rollout import Rollout, RolloutConfig
from retrain_jobs.rollout_scoring import log_losses
from retrain_jobs.scenario import RetrainScenario
from retrain_jobs.selective import TrainConfig, predict, split_events, update
from runtime.progress import progress
from schemas.settings import Settings

TRAIN_EVENTS = 600  # s1's post-drift events in the candidate's training snapshot
REVERT_AFTER = 100  # the reverting scenario's old concept returns this many events after the snapshot
NULL_NOISE = 0.5
SEEDS = (2026, 2027, 2028)


def run_rollout_bench(settings: Settings, out: TextIO = sys.stderr, quick: bool = False,
                      null_runs: int | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    config = RolloutConfig.from_settings(settings)
    seeds = SEEDS[:1] if quick else SEEDS
    null_runs = null_runs or (50 if quick else 200)
    live = config.max_shadow_events + config.canary_events + config.watch_events
    runs: list[dict[str, Any]] = []
    null_decisions: list[dict[str, Any]] = []
    with progress(settings, total=len(seeds) + 1, desc="bench rollout", unit="phase") as bar:
        for seed in seeds:
            runs.append(_seed_run(settings, config, seed, live, out, null_decisions, -(-null_runs // len(seeds))))
            bar.to(len(runs))
        bar.to(len(seeds) + 1)
    return _summary(config, runs, null_decisions, quick, out)


def _seed_run(settings: Settings, config: RolloutConfig, seed: int, live: int, out: TextIO,
              null_out: list[dict[str, Any]], null_runs: int) -> dict[str, Any]:
    base_sc = RetrainScenario(n_slices=4, pre_events=1500, post_events=TRAIN_EVENTS + live, drifted="s1", seed=seed)
    pre, post = base_sc.events()
    _, post_rev = dataclasses.replace(base_sc, revert_after=TRAIN_EVENTS + REVERT_AFTER).events()
    _, post_back = dataclasses.replace(base_sc, revert_after=TRAIN_EVENTS).events()

    train, val, _ = split_events(pre, settings.retrain_holdout_share, settings.retrain_val_share, seed)
    incumbent = model_class(settings.retrain_model_class).fit_new(train + val, {}, seed=seed)
    update(incumbent, list(incumbent.module_map()), train, val, TrainConfig.bootstrap(settings))
    incumbent.eval()
    index = {e["event_id"]: int(e["event_id"].rsplit("-", 1)[1]) - base_sc.pre_events for e in post}
    snap = [e for e in post if e["slice"] == "s1" and index[e["event_id"]] < TRAIN_EVENTS]
    s_train, s_val, _ = split_events(snap, settings.retrain_holdout_share, settings.retrain_val_share, seed)
    candidate = copy.deepcopy(incumbent)
    update(candidate, ["adapter.s1"], s_train, s_val, TrainConfig.incremental(settings))
    candidate.eval()

    result: dict[str, Any] = {"seed": seed}
    for name, stream in (("lasting", post), ("reverting", post_rev), ("reverted", post_back)):
        evs = [e for e in stream if e["slice"] == "s1" and index[e["event_id"]] >= TRAIN_EVENTS]
        li, lc = log_losses(predict(incumbent, evs), evs), log_losses(predict(candidate, evs), evs)
        result[name] = _drive(config, evs, li, lc, f"{name}-{seed}")
        r = result[name]
        print(f"seed {seed} {name}: {r['decision']} after {r['events_to_decision']} paired events "
              f"({' -> '.join(r['stages'])}; shadow {r['shadow_events']}); mean live log-loss gain of the candidate {float(np.mean(li - lc)):+.4f}, "
              f"canary regret {r['canary_regret']:+.2f} over {r['canary_served']} served events", file=out)

    stable = [e for e in post if e["slice"] == "s0" and index[e["event_id"]] >= TRAIN_EVENTS]
    logit = np.log(np.clip(predict(incumbent, stable), 1e-7, 1 - 1e-7))
    logit = logit - np.log(np.clip(1 - predict(incumbent, stable), 1e-7, 1))
    for k in range(null_runs):
        rng = np.random.default_rng([seed, k])
        order = rng.permutation(len(stable))
        evs = [stable[i] for i in order]
        a = 1 / (1 + np.exp(-(logit[order] + rng.normal(0, NULL_NOISE, len(evs)))))
        b = 1 / (1 + np.exp(-(logit[order] + rng.normal(0, NULL_NOISE, len(evs)))))
        null_out.append(_drive(config, evs, log_losses(a, evs), log_losses(b, evs), f"null-{seed}-{k}"))
    return result


def _drive(config: RolloutConfig, events: list[dict], inc: np.ndarray, cand: np.ndarray, rid: str) -> dict[str, Any]:
    """Run one rollout over the paired losses until it ends (or the events run out)."""
    r = Rollout(config, "bench-model", "v2", "v1", ["s1"], rid)
    r.start()
    decision, decided_at, promoted = None, None, False
    for e, li, lc in zip(events, inc, cand, strict=True):
        t = r.observe(e["event_id"], float(li), float(lc))
        if t is not None and t.decision is not None:
            decision, decided_at = t.decision, decided_at or r.events
            promoted = promoted or t.decision == "PROMOTED"
        if r.done:
            break
    return {
        "decision": r.phase if r.done else f"UNDECIDED ({r.phase})",
        "first_decision": decision,
        "promoted": promoted,
        "events_to_decision": decided_at,
        "events_to_end": r.events,
        "shadow_events": r.history[1]["events"] if len(r.history) > 1 else r.events,
        "stages": ["SHADOW"] + [h["kind"] for h in r.history[1:]],
        "canary_regret": r.canary_regret,
        "canary_served": r.canary_served,
        "statistic": r.history[-1]["statistic"],
    }


def _summary(config: RolloutConfig, runs: list[dict[str, Any]], nulls: list[dict[str, Any]], quick: bool,
             out: TextIO) -> dict[str, Any]:
    def common(name: str) -> str:
        return Counter(r[name]["decision"] for r in runs).most_common(1)[0][0]

    false_promotions = sum(n["promoted"] for n in nulls)
    null_events = [n["events_to_end"] for n in nulls]
    result = {
        "suite": "rollout",
        "quick": quick,
        "lasting_decision": common("lasting"),
        "reverting_decision": common("reverting"),
        "lasting_decisions": [r["lasting"]["decision"] for r in runs],
        "reverting_decisions": [r["reverting"]["decision"] for r in runs],
        "reverted_decisions": [r["reverted"]["decision"] for r in runs],
        "events_to_decision": {
            "lasting": statistics.median(r["lasting"]["events_to_decision"] or 0 for r in runs),
            "reverting": statistics.median(r["reverting"]["events_to_decision"] or 0 for r in runs),
            "reverted": statistics.median(r["reverted"]["events_to_decision"] or 0 for r in runs),
            "null": statistics.median(null_events),
        },
        "shadow_events": {"lasting": statistics.median(r["lasting"]["shadow_events"] for r in runs),
                          "reverting": statistics.median(r["reverting"]["shadow_events"] for r in runs)},
        "events_to_end": {"lasting": statistics.median(r["lasting"]["events_to_end"] for r in runs),
                          "reverting": statistics.median(r["reverting"]["events_to_end"] for r in runs)},
        "false_promotions": false_promotions,
        "null_runs": len(nulls),
        "false_promotion_rate": false_promotions / len(nulls) if nulls else 0.0,
        "alpha": config.alpha,
        "canary_regret": {"lasting": statistics.mean(r["lasting"]["canary_regret"] for r in runs),
                          "reverting": statistics.mean(r["reverting"]["canary_regret"] for r in runs)},
        "null_decisions": dict(Counter(n["decision"] for n in nulls)),
        "config": config.__dict__,
        "runs": runs,
    }
    result["targets_met"] = (
        all(d == "PROMOTED" for d in result["lasting_decisions"])
        and all(d in ("REJECTED", "ROLLED_BACK") for d in result["reverting_decisions"] + result["reverted_decisions"])
        and false_promotions <= config.alpha * len(nulls)
    )
    e2d = result["events_to_decision"]
    print(f"lasting: {result['lasting_decisions']}, median {e2d['lasting']} paired events to PROMOTED; "
          f"reverting: {result['reverting_decisions']}, median {e2d['reverting']} events to the decision; "
          f"reverted: {result['reverted_decisions']}, median {e2d['reverted']}; "
          f"null: {false_promotions}/{len(nulls)} false promotions (bound alpha = {config.alpha}), "
          f"{result['null_decisions']}, median {e2d['null']} events; canary regret lasting "
          f"{result['canary_regret']['lasting']:+.2f}, reverting {result['canary_regret']['reverting']:+.2f}; "
          f"targets met: {result['targets_met']}", file=out)
    return result
