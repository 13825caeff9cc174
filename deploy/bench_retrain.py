"""``driftctl bench retrain``: selective update vs full retrain on one drifted slice.

Scenario (:mod:`retrain_jobs.scenario`, fixed seeds): 8 slices with their own logistic
concepts; one slice's concept changes. Steps:

1. bootstrap the reference model (all modules) on the pre-drift events of every slice;
2. split the post-drift events (every slice) into train / validation / holdout by the same
   seeded hash the jobs use; measure every slice's holdout metric ("before");
3. from copies of the same starting weights, with the same optimiser, learning rate, L2
   penalty toward the previous weights, epoch cap, batch size and early stopping:

   a. selective: the plan of a PERFORMANCE_DRIFT alert on the drifted slice (tier ADAPTER:
      that slice's adapter), trained on the drifted slice's post-drift train events, the
      frozen upstream computed once (cached embeddings);
   b. full retrain: every module, trained on the post-drift train events of *every* slice,
      i.e. all the data of the snapshot. That is what a full retrain is: all parameters move,
      so every slice's data is needed to keep the other slices right (training the shared
      modules on the drifted slice alone would be a different, harmful method).

4. report the drifted slice's holdout metric before/after both, the train seconds of both
   (preprocessing, embedding cache and early-stopping evaluations included), and the
   largest metric change on the slices whose modules the selective update did not touch.

``compute_ratio`` = selective seconds / full seconds; ``recovery`` = (selective - before) /
(full - before) on the drifted slice's holdout metric; ``untouched_max_abs_delta`` = max over
the other slices of |after - before| for the selective update (0 when truly frozen).
One torch thread for fair timing.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, TextIO

import torch

from retrain_jobs.dependency import plan
from retrain_jobs.model import model_class
from retrain_jobs.scenario import RetrainScenario
from retrain_jobs.scenario import quick as quick_scenario
from retrain_jobs.selective import METRICS, TrainConfig, gate, per_slice, split_events, update
from runtime.progress import Progress, progress
from schemas.settings import Settings

TARGET_COMPUTE_RATIO = 0.2
TARGET_RECOVERY = 0.9
TARGET_UNTOUCHED_DELTA = 0.005


def run_retrain_bench(settings: Settings, out: TextIO = sys.stderr, quick: bool = False,
                      scenario: RetrainScenario | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    sc = scenario or (quick_scenario() if quick else RetrainScenario())
    with progress(settings, total=len(PHASES), desc="bench retrain", unit="phase") as bar:
        return _run(settings, sc, quick, out, bar)


PHASES = ("bootstrap", "selective", "full retrain", "evaluate")


def _run(settings: Settings, sc: RetrainScenario, quick: bool, out: TextIO, bar: Progress) -> dict[str, Any]:
    metric = settings.retrain_metric

    def say(msg: str) -> None:  # above the bar when both go to the terminal
        if bar.shown and out is sys.stderr:
            bar.write(msg)
        else:
            print(msg, file=out, flush=True)

    def phase(done: int) -> None:
        bar.note(now=PHASES[done] if done < len(PHASES) else "done")
        bar.to(done)

    phase(0)
    pre, post = sc.events()
    say(f"scenario: {len(sc.slices)} slices, {len(pre)} pre-drift and {len(post)} post-drift events; "
        f"{sc.drifted} drifts")

    b_train, b_val, _ = split_events(pre, settings.retrain_holdout_share, settings.retrain_val_share,
                                     settings.retrain_seed)
    base = model_class(settings.retrain_model_class).fit_new(b_train + b_val, {}, seed=settings.retrain_seed)
    boot = update(base, list(base.module_map()), b_train, b_val, TrainConfig.bootstrap(settings))
    base.eval()
    say(f"bootstrap: {boot.epochs} epochs, {boot.train_seconds:.1f} s, {boot.params_total} parameters")
    phase(1)

    train, val, hold = split_events(post, settings.retrain_holdout_share, settings.retrain_val_share,
                                    settings.retrain_seed)
    manifest_like = {"modules": {n: s.to_dict() for n, s in base.module_specs().items()}}
    alert = {"model": sc.model, "slice": sc.drifted, "feature": None, "alert_type": "PERFORMANCE_DRIFT"}
    p = plan(manifest_like, [alert], broad_share=settings.router_broad_fraction,
             broad_min_slices=settings.router_broad_min_slices)
    cfg = TrainConfig.incremental(settings)

    selective = copy.deepcopy(base)
    in_slice = set(p.slices)
    sel = update(selective, list(p.modules), [e for e in train if e["slice"] in in_slice],
                 [e for e in val if e["slice"] in in_slice], cfg)
    selective.eval()
    say(f"selective ({p.tier} {list(p.modules)}): {sel.epochs} epochs, {sel.train_seconds:.2f} s, "
        f"{sel.params_updated}/{sel.params_total} parameters")
    phase(2)
    full = copy.deepcopy(base)
    fst = update(full, list(full.module_map()), train, val, cfg)
    full.eval()
    say(f"full retrain: {fst.epochs} epochs, {fst.train_seconds:.2f} s, {fst.params_updated} parameters")
    phase(3)

    verdict = gate(base, selective, hold, list(p.slices), settings)  # measures every slice before and after
    before, after_sel = verdict.slices_before, verdict.slices_after
    after_full = per_slice(full, hold, metric)
    d = sc.drifted
    untouched = [s for s in before if s not in in_slice]
    higher_better = METRICS[metric][1]
    denom = after_full[d] - before[d]
    result = {
        "suite": "retrain",
        "quick": quick,
        "metric_name": metric,
        "higher_is_better": higher_better,
        "compute_ratio": sel.train_seconds / fst.train_seconds,
        "recovery": (after_sel[d] - before[d]) / denom if denom else float("nan"),
        "untouched_max_abs_delta": max((abs(after_sel[s] - before[s]) for s in untouched), default=0.0),
        "targets": {"compute_ratio": TARGET_COMPUTE_RATIO, "recovery": TARGET_RECOVERY,
                    "untouched_max_abs_delta": TARGET_UNTOUCHED_DELTA},
        "drifted_slice": d,
        "slices": sc.slices,
        "tier": p.tier,
        "modules_updated": sel.modules,
        "selective": {
            "train_seconds": sel.train_seconds, "epochs": sel.epochs, "train_events": sel.train_events,
            "params_updated": sel.params_updated, "params_total": sel.params_total,
            "metric_before": before[d], "metric_after": after_sel[d], "cached_embeddings": sel.cached_embeddings,
            "gate": {"passed": verdict.passed, "reason": verdict.reason, "latency_ms": verdict.latency_ms},
        },
        "full": {
            "train_seconds": fst.train_seconds, "epochs": fst.epochs, "train_events": fst.train_events,
            "params_updated": fst.params_updated, "params_total": fst.params_total,
            "metric_before": before[d], "metric_after": after_full[d],
            "other_slices_max_abs_delta": max((abs(after_full[s] - before[s]) for s in untouched), default=0.0),
        },
        "per_slice": {s: {"before": before[s], "selective": after_sel[s], "full": after_full[s]} for s in before},
        "bootstrap_seconds": boot.train_seconds,
        "holdout_events": len(hold),
    }
    result["targets_met"] = (
        result["compute_ratio"] <= TARGET_COMPUTE_RATIO
        and result["recovery"] >= TARGET_RECOVERY
        and result["untouched_max_abs_delta"] <= TARGET_UNTOUCHED_DELTA
    )
    phase(4)
    say(f"compute_ratio {result['compute_ratio']:.3f} (target <= {TARGET_COMPUTE_RATIO}), "
        f"recovery {result['recovery']:.3f} (>= {TARGET_RECOVERY}), "
        f"untouched_max_abs_delta {result['untouched_max_abs_delta']:.4g} (<= {TARGET_UNTOUCHED_DELTA}); "
        f"{metric} on {d}: before {before[d]:.4f}, selective {after_sel[d]:.4f}, full {after_full[d]:.4f}")
    return result
