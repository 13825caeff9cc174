"""The offline gate: may an updated version replace its parent? Pure: two nets and a holdout in,
a verdict out; its settings come as one :class:`GateConfig`, not the whole Settings.

Checks, in order (the verdict's ``cause`` is the first that failed; its reason names all of
them with their numbers, and every number is in ``checks``):

1. holdout: every affected slice has ``min_slice_events`` labelled holdout events;
2. min_gain: every affected slice improves the primary metric by ``min_gain``;
3. calibration: the expected calibration error (``calibration_bins`` equal-width bins) of the
   affected slices' holdout, pooled, may grow by at most ``calibration_tolerance``;
4. fairness (only with ``fairness_feature``): on the affected slices' holdout, the gap between
   the highest and lowest error rate (0/1 at 0.5) of the feature's groups (groups with at least
   ``fairness_min_group_events`` events) may widen by at most ``fairness_tolerance``;
5. tolerance: no other slice loses more than ``tolerance`` of the metric;
6. latency: one batch of ``latency_batch`` events scores within ``latency_budget_ms``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from retrain_jobs.features import binary_labels
from retrain_jobs.selective import gain, latency_ms, per_slice, pooled, predict
from schemas.retraining import Cause
from schemas.settings import section


@dataclass(frozen=True)
class GateConfig:
    metric: str = "log_loss"
    min_gain: float = 0.01
    tolerance: float = 0.01
    min_slice_events: int = 20
    latency_budget_ms: float = 50.0
    latency_batch: int = 256
    calibration_bins: int = 10
    calibration_tolerance: float = 0.02
    fairness_feature: str | None = None
    fairness_tolerance: float = 0.02
    fairness_min_group_events: int = 20

    @classmethod
    def from_settings(cls, settings: Any) -> GateConfig:
        return section(settings, "retrain_", cls)


@dataclass
class GateResult:
    passed: bool
    reason: str
    metric: str
    metric_before: float
    metric_after: float
    other_slices_max_regression: float
    latency_ms: float
    slices_before: dict[str, float]
    slices_after: dict[str, float]
    cause: Cause = Cause.GATE_PASSED
    checks: dict[str, float] = field(default_factory=dict)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Sum over equal-width probability bins of (bin share) x |mean label - mean prediction|."""
    if len(y) == 0:
        return 0.0
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.mean() * abs(float(y[m].mean()) - float(p[m].mean()))
    return float(total)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2)) if len(y) else 0.0


def group_error_gap(events: Sequence[Mapping[str, Any]], p: np.ndarray, feature: str, min_events: int) -> float:
    """Highest minus lowest error rate (prediction at 0.5 vs label) among the groups of a
    categorical ``feature`` with at least ``min_events`` events (missing = its own group); 0
    with fewer than two such groups."""
    y = binary_labels(events).numpy()
    wrong: dict[str, list[bool]] = defaultdict(list)
    for e, yi, pi in zip(events, y, p):
        wrong[str((e.get("categorical") or {}).get(feature))].append(bool((pi >= 0.5) != (yi >= 0.5)))
    rates = [float(np.mean(w)) for w in wrong.values() if len(w) >= min_events]
    return max(rates) - min(rates) if len(rates) >= 2 else 0.0


def gate(before_net: nn.Module, after_net: nn.Module, holdout: Sequence[Mapping[str, Any]],
         slices: Sequence[str], cfg: GateConfig) -> GateResult:
    """Judge ``after_net`` against ``before_net`` on ``holdout`` for the affected ``slices``."""
    metric = cfg.metric
    b, a = per_slice(before_net, holdout, metric), per_slice(after_net, holdout, metric)
    gains = {s: gain(metric, b[s], a[s]) for s in b}
    wanted = set(slices)
    target = [e for e in holdout if e["slice"] in wanted]
    m_before, m_after = pooled(before_net, target, metric), pooled(after_net, target, metric)
    others = [s for s in b if s not in wanted]
    regression = max((-gains[s] for s in others), default=0.0) + 0.0  # no -0.0
    lat = latency_ms(after_net, holdout, cfg.latency_batch)
    checks = {f"gate.{metric}_before": m_before, f"gate.{metric}_after": m_after,
              "gate.other_slices_max_regression": regression, "gate.latency_ms": lat}
    failures: list[tuple[Cause, str]] = []

    def fail(cause: Cause, text: str) -> None:
        failures.append((cause, text))

    counts = Counter(e["slice"] for e in target)
    thin = [s for s in slices if counts[s] < cfg.min_slice_events]
    if thin:
        fail(Cause.HOLDOUT, f"holdout: slices {thin} have fewer than {cfg.min_slice_events} "
                                        "labelled holdout events")
    else:
        weak = {s: gains[s] for s in slices if gains[s] < cfg.min_gain}
        if weak:
            fail(Cause.MIN_GAIN, "min_gain: " + ", ".join(
                f"{s} {metric} gain {g:+.4f}" for s, g in sorted(weak.items())) + f" < {cfg.min_gain}")
    if target:
        y = binary_labels(target).numpy()
        p_b, p_a = predict(before_net, target), predict(after_net, target)
        ece_b, ece_a = (expected_calibration_error(y, p, cfg.calibration_bins) for p in (p_b, p_a))
        checks.update({"gate.ece_before": ece_b, "gate.ece_after": ece_a,
                       "gate.brier_before": brier(y, p_b), "gate.brier_after": brier(y, p_a)})
        if ece_a - ece_b > cfg.calibration_tolerance:
            fail(Cause.CALIBRATION, f"calibration: ECE ({cfg.calibration_bins} bins) on {sorted(wanted)} "
                                                f"{ece_b:.4f} -> {ece_a:.4f}, worse by {ece_a - ece_b:.4f} > "
                                                f"{cfg.calibration_tolerance}")
        if cfg.fairness_feature:
            f = cfg.fairness_feature
            gap_b = group_error_gap(target, p_b, f, cfg.fairness_min_group_events)
            gap_a = group_error_gap(target, p_a, f, cfg.fairness_min_group_events)
            checks.update({"gate.fairness_gap_before": gap_b, "gate.fairness_gap_after": gap_a})
            if gap_a - gap_b > cfg.fairness_tolerance:
                fail(Cause.FAIRNESS, f"fairness: error-rate gap between {f} groups on {sorted(wanted)} "
                                                 f"{gap_b:.4f} -> {gap_a:.4f}, wider by {gap_a - gap_b:.4f} > "
                                                 f"{cfg.fairness_tolerance}")
    if regression > cfg.tolerance:
        worst = max(others, key=lambda s: -gains[s])
        fail(Cause.TOLERANCE, f"tolerance: slice {worst} {metric} worse by {regression:.4f} > "
                                          f"{cfg.tolerance}")
    if lat > cfg.latency_budget_ms:
        fail(Cause.LATENCY, f"latency: {lat:.1f} ms per {cfg.latency_batch} events > "
                                        f"{cfg.latency_budget_ms} ms")
    reason = "; ".join(text for _, text in failures) if failures else (
        f"passed: {metric} {m_before:.4f} -> {m_after:.4f} on {sorted(slices)}, "
        f"other slices max regression {regression:.4f}, latency {lat:.1f} ms"
    )
    cause = failures[0][0] if failures else Cause.GATE_PASSED
    return GateResult(not failures, reason, metric, m_before, m_after, regression, lat, b, a, cause, checks)
