"""``driftctl bench retrain``: selective update vs full retrain on one drifted slice.

Scenario (:mod:`retrain_jobs.scenario`, fixed seeds): 8 slices with their own logistic
concepts; one slice's concept changes. Steps:

1. bootstrap the reference model (all modules) on the pre-drift events of every slice;
2. split the post-drift events (every slice) into train / validation / holdout by the same
   seeded hash the jobs use; measure every slice's holdout metric ("before");
3. from copies of the same starting weights, with the same optimiser, learning rate, L2
   penalty toward the previous weights, epoch cap, batch size and early stopping:

   a. gradient-guided (what the jobs do): of the modules the dependency map allows a
      PERFORMANCE_DRIFT alert on the drifted slice at tier MODULE (its adapter and the trunk),
      the fewest carrying ``retrain_module_evidence_share`` of the gradient evidence on the
      slice's post-drift train events (:mod:`retrain_jobs.evidence`), trained on those events
      (with only head modules chosen, the frozen upstream is computed once: cached embeddings);
   b. rule-based, side by side: every allowed module, as the dependency map's rules alone
      would update at that tier, on the same events;
   c. full retrain: every module, trained on the post-drift train events of *every* slice,
      i.e. all the data of the snapshot. That is what a full retrain is: all parameters move,
      so every slice's data is needed to keep the other slices right (training the shared
      modules on the drifted slice alone would be a different, harmful method).

4. report the drifted slice's holdout metric before/after both, the train seconds of both
   (preprocessing, embedding cache and early-stopping evaluations included), and the
   largest metric change on the slices whose modules the selective update did not touch.

The headline numbers are the gradient-guided update's (the rule-based ones are under
``rule_based``): ``compute_ratio`` = its CPU seconds / the full retrain's CPU seconds (CPU
time of the training thread, so other processes on a shared machine do not skew it; the wall
clock ratio is ``wall_ratio``); ``recovery`` = (selective - before) /
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
from retrain_jobs.evidence import choose_modules, module_scores
from retrain_jobs.gate import GateConfig, gate
from retrain_jobs.model import model_class
from retrain_jobs.scenario import RetrainScenario
from retrain_jobs.scenario import quick as quick_scenario
from retrain_jobs.selective import METRICS, TrainConfig, per_slice, split_events, update
from runtime.progress import Progress, progress
from schemas.settings import Settings

TARGET_COMPUTE_RATIO = 0.05
TARGET_RECOVERY = 0.95
TARGET_UNTOUCHED_DELTA = 0.0


def run_retrain_bench(settings: Settings, out: TextIO = sys.stderr, quick: bool = False,
                      scenario: RetrainScenario | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    sc = scenario or (quick_scenario() if quick else RetrainScenario())
    with progress(settings, total=len(PHASES), desc="bench retrain", unit="phase") as bar:
        return _run(settings, sc, quick, out, bar)


PHASES = ("bootstrap", "gradient-guided and rule-based", "full retrain", "evaluate")


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
    allowed = plan(manifest_like, [alert], tier="MODULE", broad_share=settings.router_broad_fraction,
                   broad_min_slices=settings.router_broad_min_slices)  # what the dependency map allows
    cfg = TrainConfig.incremental(settings)
    in_slice = set(allowed.slices)
    d_train = [e for e in train if e["slice"] in in_slice]
    d_val = [e for e in val if e["slice"] in in_slice]

    scores = module_scores(base, list(allowed.modules), d_train)  # one backward pass on the drifted data
    chosen = choose_modules(scores, settings.retrain_module_evidence_share)
    selective = copy.deepcopy(base)
    sel = update(selective, chosen, d_train, d_val, cfg)
    selective.eval()
    say(f"gradient-guided (of {list(allowed.modules)}: scores "
        + ", ".join(f"{m} {v:.3f}" for m, v in sorted(scores.items())) + f" -> {chosen}): {sel.epochs} epochs, "
        f"{sel.train_seconds:.2f} s, {sel.params_updated}/{sel.params_total} parameters")
    rule = copy.deepcopy(base)
    rst = update(rule, list(allowed.modules), d_train, d_val, cfg)
    rule.eval()
    say(f"rule-based ({allowed.tier} {list(allowed.modules)}): {rst.epochs} epochs, {rst.train_seconds:.2f} s, "
        f"{rst.params_updated}/{rst.params_total} parameters")
    phase(2)
    full = copy.deepcopy(base)
    fst = update(full, list(full.module_map()), train, val, cfg)
    full.eval()
    say(f"full retrain: {fst.epochs} epochs, {fst.train_seconds:.2f} s, {fst.params_updated} parameters")
    phase(3)

    gcfg = GateConfig.from_settings(settings)
    verdict = gate(base, selective, hold, list(allowed.slices), gcfg)  # measures every slice before and after
    rule_verdict = gate(base, rule, hold, list(allowed.slices), gcfg)
    before, after_sel, after_rule = verdict.slices_before, verdict.slices_after, rule_verdict.slices_after
    after_full = per_slice(full, hold, metric)
    d = sc.drifted
    untouched = [s for s in before if s not in in_slice]
    higher_better = METRICS[metric][1]
    denom = after_full[d] - before[d]

    def method(stats: Any, after: dict[str, float], gv: Any) -> dict[str, Any]:
        return {
            "modules_updated": stats.modules, "train_seconds": stats.train_seconds, "epochs": stats.epochs,
            "train_events": stats.train_events, "params_updated": stats.params_updated,
            "params_total": stats.params_total, "cpu_seconds": stats.cpu_seconds,
            "compute_ratio": stats.cpu_seconds / fst.cpu_seconds,
            "wall_ratio": stats.train_seconds / fst.train_seconds,
            "recovery": (after[d] - before[d]) / denom if denom else float("nan"),
            "untouched_max_abs_delta": max((abs(after[s] - before[s]) for s in untouched), default=0.0),
            "metric_before": before[d], "metric_after": after[d], "cached_embeddings": stats.cached_embeddings,
            "gate": {"passed": gv.passed, "cause": gv.cause.value, "reason": gv.reason, "latency_ms": gv.latency_ms,
                     "checks": gv.checks},
        }

    guided = method(sel, after_sel, verdict)
    result = {
        "suite": "retrain",
        "quick": quick,
        "metric_name": metric,
        "higher_is_better": higher_better,
        "compute_ratio": guided["compute_ratio"],
        "recovery": guided["recovery"],
        "untouched_max_abs_delta": guided["untouched_max_abs_delta"],
        "targets": {"compute_ratio": TARGET_COMPUTE_RATIO, "recovery": TARGET_RECOVERY,
                    "untouched_max_abs_delta": TARGET_UNTOUCHED_DELTA},
        "drifted_slice": d,
        "slices": sc.slices,
        "tier": allowed.tier,
        "allowed_modules": list(allowed.modules),
        "module_scores": scores,
        "modules_updated": sel.modules,
        "selective": guided,  # the gradient-guided choice, what the jobs do
        "rule_based": method(rst, after_rule, rule_verdict),  # every allowed module, as the rules alone would
        "full": {
            "train_seconds": fst.train_seconds, "cpu_seconds": fst.cpu_seconds, "epochs": fst.epochs,
            "train_events": fst.train_events,
            "params_updated": fst.params_updated, "params_total": fst.params_total,
            "metric_before": before[d], "metric_after": after_full[d],
            "other_slices_max_abs_delta": max((abs(after_full[s] - before[s]) for s in untouched), default=0.0),
        },
        "per_slice": {s: {"before": before[s], "selective": after_sel[s], "rule_based": after_rule[s],
                          "full": after_full[s]} for s in before},
        "bootstrap_seconds": boot.train_seconds,
        "holdout_events": len(hold),
    }
    result["targets_met"] = (
        result["compute_ratio"] <= TARGET_COMPUTE_RATIO
        and result["recovery"] >= TARGET_RECOVERY
        and result["untouched_max_abs_delta"] <= TARGET_UNTOUCHED_DELTA
    )
    phase(4)
    rb = result["rule_based"]
    say(f"side by side on {d}: rule-based {rb['modules_updated']} {rb['params_updated']} params, compute_ratio "
        f"{rb['compute_ratio']:.3f}, recovery {rb['recovery']:.3f}, untouched {rb['untouched_max_abs_delta']:.4g}; "
        f"gradient-guided {sel.modules} {sel.params_updated} params")
    say(f"compute_ratio {result['compute_ratio']:.3f} (target <= {TARGET_COMPUTE_RATIO}), "
        f"recovery {result['recovery']:.3f} (>= {TARGET_RECOVERY}), "
        f"untouched_max_abs_delta {result['untouched_max_abs_delta']:.4g} (<= {TARGET_UNTOUCHED_DELTA}); "
        f"{metric} on {d}: before {before[d]:.4f}, selective {after_sel[d]:.4f}, full {after_full[d]:.4f}")
    return result
