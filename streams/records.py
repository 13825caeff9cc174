"""What a detection and a summary become: the DriftAlert and DriftStat records, with their
deterministic ids (the same detection at the same offset always gets the same id, which is
what makes replays after a restart idempotent)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.codec import ALERT, STAT

RawPosition = tuple[str, int, int, int]  # (topic, partition, offset, event_time): one per event, shared


class Position(NamedTuple):
    """Where an event came from; alerts and stats carry it as provenance."""

    topic: str
    partition: int
    offset: int
    event_time: int


@dataclass
class Finding:
    """A confirmed change on one channel, before it becomes an alert record."""

    statistic: float
    threshold: float
    confidence: float
    effect: float
    reference: dict[str, float | int]
    current: dict[str, float | int]
    first: Position
    extra_params: dict[str, str] = field(default_factory=dict)


def summarize(values: list[float]) -> dict[str, float | int]:
    n = len(values)
    if n == 0:
        return {"count": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"count": n, "mean": mean, "std": math.sqrt(var), "min": min(values), "max": max(values)}


def alert_id_for(model: str, slice_: str, feature: str | None, detector: str, pos: Position) -> str:
    """Deterministic id: the same detection at the same offset always gets the same id."""
    raw = "\x1f".join([model, slice_, feature or "", detector, pos.topic, str(pos.partition), str(pos.offset)])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def severity_for(effect_size: float) -> str:
    if effect_size >= 1.5:
        return "HIGH"
    if effect_size >= 0.5:
        return "MEDIUM"
    return "LOW"


def alert_record(model: str, slice_: str, feature: str | None, channel: str, alert_type: str, detector: Any,
                 f: Finding, pos: Position, worker_id: str, app_version: str, now_ms: int) -> dict[str, Any]:
    """The DriftAlert for ``f``, found by ``detector`` on ``channel`` at ``pos``."""
    return {
        "schema_version": ALERT.version,
        "alert_id": alert_id_for(model, slice_, feature, detector.key + ":" + channel, pos),
        "alert_type": alert_type,
        "severity": severity_for(f.effect),
        "model": model,
        "slice": slice_,
        "feature": feature,
        "detector": detector.key,
        "detector_params": {**detector.params, **detector.detection_params, "channel": channel, **f.extra_params},
        "statistic": f.statistic,
        "threshold": f.threshold,
        "confidence": min(max(f.confidence, 0.0), 1.0),
        "reference": f.reference,
        "current": f.current,
        "topic": pos.topic,
        "partition": pos.partition,
        "first_offset": f.first.offset,
        "last_offset": pos.offset,
        "window_start_event_time": f.first.event_time,
        "window_end_event_time": pos.event_time,
        "worker_id": worker_id,
        "app_version": app_version,
        "detected_at": now_ms,
    }


@dataclass(frozen=True, slots=True)
class StatPoint:
    """A group's interval summary when it reached ``stats_every_events`` values, before the
    channels' states (warm-up, cooldown) at that event are known."""

    pos: RawPosition
    first: RawPosition | None
    n: int
    mean: float
    var: float
    missing: int
    ref_n: int
    ref_mean: float
    ref_var: float


def stat_record(model: str, slice_: str, feature: str | None, detector_key: str, p: StatPoint, state: str,
                worker_id: str, now_ms: int) -> dict[str, Any]:
    """The DriftStat of one interval; ``state`` is warmup, drift (a cooldown) or stable."""
    pos = Position(*p.pos)
    total = p.n + p.missing
    # effect size against the feature's first values: 0.03 is noise for a 1,000-value interval,
    # 1 a shift of one reference sd; it stays up while the slice stays drifted
    drift_score = abs(p.mean - p.ref_mean) / (math.sqrt(p.ref_var) or 1e-12) if p.ref_n > 1 and p.n else 0.0
    first = Position(*p.first) if p.first else pos
    return {
        "schema_version": STAT.version,
        "stat_id": alert_id_for(model, slice_, feature, "stat", pos),
        "model": model,
        "slice": slice_,
        "feature": feature or "",
        "detector": detector_key,
        "count": total,
        "mean": p.mean,
        "std": math.sqrt(p.var),
        "missing_rate": p.missing / total if total else 0.0,
        "drift_score": min(drift_score, 1e12),
        "detector_state": state,
        "topic": pos.topic,
        "partition": pos.partition,
        "first_offset": first.offset,
        "last_offset": pos.offset,
        "window_start_event_time": first.event_time,
        "window_end_event_time": pos.event_time,
        "worker_id": worker_id,
        "emitted_at": now_ms,
    }
