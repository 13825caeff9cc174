"""Triage: does a data drift hurt the model enough to be worth a training job?

A DATA_DRIFT or DATA_QUALITY alert says the inputs moved, not that the model got worse; many
covariate shifts are ones the model already handles (the previous round's held-out runs spent
two rejected jobs on each of those). Before training, the current version scores the slice's
labelled events after the drift onset and before it (inference only), and a stated test
decides:

- per event, the log-loss of the current version; ``d = mean(after) - mean(before)``;
- one-sided Welch t-test of H0 ``d <= margin`` against H1 ``d > margin`` at level ``alpha``.
  Rejecting H0 (harm) starts the job; otherwise the request ends SKIPPED with cause NO_HARM.
  ``alpha`` (default 0.001) is the nominal chance of a training job for a drift whose harm is
  at most ``margin`` (wasted compute). Per-event log-losses are right-skewed, which makes a
  one-sided t-test somewhat liberal with few events: simulated with calibrated-but-noisy
  predictions and no harm, nominal 0.001 gave 0.02-0.3% with 200 events before / 500 after and
  up to 0.8% with 60 / 200 (nominal 0.01 gave 1.3-3%). A harmful drift is missed when the test
  lacks power, and a later
  PERFORMANCE_DRIFT alert on the slice still starts a job (the router lets those through);
- with fewer than ``min_events`` labelled events on either side the test cannot speak, and the
  request goes to training (the gate judges it): no skip without evidence.

PERFORMANCE_DRIFT and LABEL_DRIFT are harm by themselves: no triage (:func:`needs_triage`).
Both sides keep only the events of the jobs' seeded holdout split (:func:`split_events`, a
hash of event_id: the same events are held out by every bootstrap and job of the same seed),
so no version scored was fitted on them: scored on its own training events a version looks
better before the onset than it is (measured on the held-out run: +0.02-0.03 log-loss on
stable slices), which would read as harm. ``margin`` defaults to the gate's ``min_gain``:
below it no update could pass anyway.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from schemas.retraining import FEATURE_ALERTS

EPS = 1e-7


@dataclass(frozen=True)
class TriageConfig:
    alpha: float = 0.001
    margin: float = 0.01
    min_events: int = 50

    @classmethod
    def from_settings(cls, s: Any) -> TriageConfig:
        return cls(alpha=s.retrain_triage_alpha, margin=s.retrain_triage_margin, min_events=s.retrain_triage_min_events)


@dataclass(frozen=True)
class TriageVerdict:
    harmful: bool  # True: train; False: SKIPPED
    decided: bool  # False: too few events to test (the request trains)
    delta: float  # mean per-event log-loss after minus before
    ci_low: float  # two-sided (1 - 2 alpha) interval of delta; ci_low is the one-sided bound
    ci_high: float
    p_value: float
    loss_before: float
    loss_after: float
    n_before: int
    n_after: int
    alpha: float
    margin: float

    @property
    def reason(self) -> str:
        if not self.decided:
            return (f"triage: {self.n_before} labelled events before / {self.n_after} after the onset, fewer than "
                    "needed to test; training")
        verdict = "harm" if self.harmful else "no significant harm"
        return (f"triage: {verdict}: log-loss {self.loss_before:.4f} before ({self.n_before} events) -> "
                f"{self.loss_after:.4f} after the onset ({self.n_after}), delta {self.delta:+.4f}, "
                f"{100 * (1 - 2 * self.alpha):.4g}% interval [{self.ci_low:+.4f}, {self.ci_high:+.4f}]; one-sided Welch "
                f"t-test of delta > {self.margin} at alpha {self.alpha}: p = {self.p_value:.3g}")

    def checks(self) -> dict[str, float]:
        return {"triage.delta": self.delta, "triage.ci_low": self.ci_low, "triage.ci_high": self.ci_high,
                "triage.p_value": self.p_value, "triage.loss_before": self.loss_before,
                "triage.loss_after": self.loss_after, "triage.n_before": float(self.n_before),
                "triage.n_after": float(self.n_after), "triage.alpha": self.alpha, "triage.margin": self.margin}


def needs_triage(alert_types: Iterable[str]) -> bool:
    """Only requests made of feature alerts alone are triaged (an empty list: not known, train)."""
    types = set(alert_types)
    return bool(types) and types <= FEATURE_ALERTS


def event_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def welch_greater(after: np.ndarray, before: np.ndarray, margin: float, alpha: float) -> tuple[float, float, float, float]:
    """(delta, ci_low, ci_high, p) of the one-sided Welch test of mean(after) - mean(before) > margin."""
    na, nb = len(after), len(before)
    delta = float(after.mean() - before.mean())
    va, vb = float(after.var(ddof=1)) / na, float(before.var(ddof=1)) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        return delta, delta, delta, 0.0 if delta > margin else 1.0
    df = (va + vb) ** 2 / ((va**2 / (na - 1) if na > 1 else 0.0) + (vb**2 / (nb - 1) if nb > 1 else 0.0) or 1e-300)
    q = float(stats.t.ppf(1 - alpha, df))
    p = float(stats.t.sf((delta - margin) / se, df))
    return delta, delta - q * se, delta + q * se, p


def triage(before_losses: Sequence[float], after_losses: Sequence[float], cfg: TriageConfig) -> TriageVerdict:
    """The verdict on per-event log-losses of the current version before and after the onset."""
    b, a = np.asarray(before_losses, dtype=float), np.asarray(after_losses, dtype=float)
    nb, na = len(b), len(a)
    lb = float(b.mean()) if nb else math.nan
    la = float(a.mean()) if na else math.nan
    if nb < cfg.min_events or na < cfg.min_events:
        return TriageVerdict(True, False, la - lb if nb and na else math.nan, math.nan, math.nan, math.nan,
                             lb, la, nb, na, cfg.alpha, cfg.margin)
    delta, lo, hi, p = welch_greater(a, b, cfg.margin, cfg.alpha)
    return TriageVerdict(p < cfg.alpha, True, delta, lo, hi, p, lb, la, nb, na, cfg.alpha, cfg.margin)


def triage_model(net: Any, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
                 cfg: TriageConfig) -> TriageVerdict:
    """Score ``net`` (inference only) on labelled events before and after the onset, then test."""
    from retrain_jobs.features import binary_labels
    from retrain_jobs.selective import predict

    def losses(events: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not events:
            return np.zeros(0)
        return event_log_loss(binary_labels(events).numpy().astype(float), predict(net, events))

    return triage(losses(before), losses(after), cfg)


# --- the step in the retrain worker (its I/O, the snapshot reader, is passed in) ----------------
def pre_onset_snapshot(snapshot: Mapping[str, Any], slices: Sequence[str], per_partition: int) -> dict[str, Any]:
    """The ``per_partition`` messages before each of the snapshot's ranges, for its slices: the
    request's snapshot starts at the estimated onset (with the router's default
    ``router_reference_events`` 0), so what precedes it is the "before"."""
    ranges = []
    for r in snapshot["ranges"]:
        start = int(r["start_offset"])
        if start > 0:
            ranges.append({"partition": int(r["partition"]), "start_offset": max(0, start - per_partition),
                           "end_offset": start})
    return {"topic": snapshot["topic"], "ranges": ranges, "slice_filter": list(slices), "labelled_only": True}


def held_out(events: Sequence[Mapping[str, Any]], settings: Any) -> list[Mapping[str, Any]]:
    """The events in the jobs' seeded holdout split: never trained on by a version of this seed."""
    from retrain_jobs.selective import split_events

    return split_events(events, settings.retrain_holdout_share, settings.retrain_val_share, settings.retrain_seed)[2]


def triage_request(settings: Any, request: Mapping[str, Any], events: Sequence[Mapping[str, Any]], registry: Any,
                   read_snapshot: Any) -> tuple[TriageVerdict | None, dict[str, Any] | None]:
    """(verdict, SKIPPED result or None) for a request; (None, None) when not triaged.

    Not triaged: triage off, a request with a concept alert (or no alert types: an older
    router), a request already decided (the job returns its stored decision), or a model with
    no version. A SKIPPED result is recorded in the registry like a job's decision, so a
    re-delivered request gets the same one.
    """
    import time

    from retrain_jobs.result import retrain_result
    from schemas.retraining import Cause, Decision

    model, rid = request["model"], request["request_id"]
    if not settings.retrain_triage or not needs_triage(request.get("alert_types") or ()):
        return None, None
    if registry.decision(model, rid) is not None or registry.current(model) is None:
        return None, None
    began = time.perf_counter()
    slices = set(request.get("slices") or request["snapshot"].get("slice_filter") or ())
    after = [e for e in events if e.get("model") == model and e["slice"] in slices and e.get("label") is not None]
    pre = pre_onset_snapshot(request["snapshot"], sorted(slices), settings.retrain_triage_reference_events)
    before = [e for e in read_snapshot(settings, pre) if e.get("model") == model and e["slice"] in slices]
    before, after = (held_out(events_, settings) for events_ in (before, after))
    net, manifest = registry.load(model)
    net.eval()
    verdict = triage_model(net, before, after, TriageConfig.from_settings(settings))
    if verdict.harmful:
        return verdict, None
    checks = {**verdict.checks(), "triage.seconds": time.perf_counter() - began}
    result = retrain_result(request, parent_version=manifest.version, metric_name="log_loss",  # unchanged model:
                            metric_before=verdict.loss_after, metric_after=verdict.loss_after,  # its post-onset loss
                            decision=Decision.SKIPPED.value, cause=Cause.NO_HARM.value, reason=verdict.reason,
                            checks=checks)
    registry.record_decision(model, rid, result)
    return verdict, result
