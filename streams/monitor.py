"""Per-(model, slice, feature) drift monitoring as pure functions of the event stream.

Nothing here touches Kafka or the clock: the agent passes decoded events with their
topic/partition/offset, and gets back alert and stat records to send. Given the same
events at the same offsets, a monitor produces the same alerts with the same ids, which
is what makes replays after a restart idempotent.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from schemas.codec import ALERT, STAT
from streams.detectors import Detector

BUFFER = 1024  # recent values kept per feature, for window summaries and provenance


@dataclass(frozen=True)
class MonitorConfig:
    warmup_events: int = 100
    cooldown_events: int = 500
    stats_every_events: int = 1000
    worker_id: str = "worker"
    app_version: str = "0.1.0"


@dataclass(frozen=True)
class Position:
    """Where an event came from; alerts and stats carry it as provenance."""

    topic: str
    partition: int
    offset: int
    event_time: int


class _Running:
    """Welford mean/variance plus min, max and a missing count."""

    __slots__ = ("n", "mean", "m2", "lo", "hi", "missing")

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.missing = 0, 0.0, 0.0, 0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x

    @property
    def var(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


def summarize(values: np.ndarray) -> dict[str, float | int]:
    if len(values) == 0:
        return {"count": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {
        "count": int(len(values)),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


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


class FeatureMonitor:
    """A detector plus what an alert needs to explain itself, for one feature of one slice."""

    def __init__(self, detector: Detector):
        self.detector = detector
        self.seen = 0  # non-missing values since start
        self.quiet_until = 0  # seen-count before which no alert fires (warm-up / cooldown)
        self.values = np.zeros(BUFFER)
        self.offsets = np.zeros(BUFFER, dtype=np.int64)
        self.times = np.zeros(BUFFER, dtype=np.int64)
        self.interval = _Running()  # since the last DriftStat
        self.interval_first: Position | None = None
        self.reference = _Running()  # since the last alert: the baseline drift_score compares to
        self.alerts = 0

    def recent(self, n: int) -> slice:
        """Index order (oldest first) of the last n buffered values."""
        n = min(n, self.seen, BUFFER)
        idx = (np.arange(self.seen - n, self.seen)) % BUFFER
        return idx

    def observe(self, value: float | None, pos: Position) -> bool:
        """Feed one value; True when the detector fires outside warm-up/cooldown."""
        if value is None or math.isnan(value):
            self.interval.missing += 1
            if self.interval_first is None:
                self.interval_first = pos
            return False
        i = self.seen % BUFFER
        self.values[i], self.offsets[i], self.times[i] = value, pos.offset, pos.event_time
        self.seen += 1
        if self.interval_first is None:
            self.interval_first = pos
        self.interval.add(value)
        fired = self.detector.update(value)
        if fired and self.seen > self.quiet_until:
            return True
        self.reference.add(value)
        return False


@dataclass
class SliceState:
    """Everything monitored for one (model, slice); the unit of snapshot and restore."""

    model: str
    slice: str
    features: dict[str, FeatureMonitor] = field(default_factory=dict)
    last_offset: dict[int, int] = field(default_factory=dict)  # partition -> last offset applied
    events_since_snapshot: int = 0


@dataclass
class Output:
    state: SliceState | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)


class Monitor:
    """Slices discovered on the fly; each new feature gets a clone of the prototype detector."""

    def __init__(
        self,
        prototype: Detector,
        config: MonitorConfig,
        loader: Callable[[str, str], SliceState | None] | None = None,
    ):
        """``loader`` restores a slice's snapshotted state the first time the slice is seen."""
        self.prototype = prototype
        self.config = config
        self.loader = loader
        self.slices: dict[tuple[str, str], SliceState] = {}

    def state(self, model: str, slice_: str) -> SliceState:
        key = (model, slice_)
        st = self.slices.get(key)
        if st is None:
            st = (self.loader(model, slice_) if self.loader else None) or SliceState(model, slice_)
            self.slices[key] = st
        return st

    def observe(self, event: dict[str, Any], topic: str, partition: int, offset: int, now_ms: int) -> Output:
        st = self.state(event["model"], event["slice"])
        if offset <= st.last_offset.get(partition, -1):
            return Output(state=st)  # already applied (replay after restore): state must not double count
        st.last_offset[partition] = offset
        st.events_since_snapshot += 1
        pos = Position(topic, partition, offset, event["event_time"])
        out = Output(state=st)
        for name, value in event["features"].items():
            fm = st.features.get(name)
            if fm is None:
                fm = st.features[name] = FeatureMonitor(self.prototype.clone())
                fm.quiet_until = self.config.warmup_events
            if fm.observe(value, pos):
                out.alerts.append(self._alert(st, name, fm, pos, now_ms))
            if fm.interval.n + fm.interval.missing >= self.config.stats_every_events:
                out.stats.append(self._stat(st, name, fm, pos, now_ms))
        return out

    def _alert(self, st: SliceState, feature: str, fm: FeatureMonitor, pos: Position, now_ms: int) -> dict[str, Any]:
        det = fm.detector
        n_cur = max(2, min(det.window, fm.seen // 2, BUFFER // 2))
        n_ref = min(fm.seen, BUFFER) - n_cur
        idx = fm.recent(n_cur + n_ref)
        ref_vals, cur_vals = fm.values[idx[:n_ref]], fm.values[idx[n_ref:]]
        ref, cur = summarize(ref_vals), summarize(cur_vals)
        diff = abs(cur["mean"] - ref["mean"])
        pooled_var = max((ref["std"] ** 2 + cur["std"] ** 2) / 2.0, 1e-12)
        threshold = det.threshold(max(n_ref, 1), n_cur, pooled_var)
        se = math.sqrt(ref["std"] ** 2 / max(n_ref, 1) + cur["std"] ** 2 / n_cur) or 1e-12
        confidence = math.erf(diff / se / math.sqrt(2.0))
        effect = diff / math.sqrt(pooled_var)
        fm.alerts += 1
        fm.quiet_until = fm.seen + self.config.cooldown_events
        fm.reference = _Running()
        record = {
            "schema_version": ALERT.version,
            "alert_id": alert_id_for(st.model, st.slice, feature, det.key, pos),
            "alert_type": "DATA_DRIFT",
            "severity": severity_for(effect),
            "model": st.model,
            "slice": st.slice,
            "feature": feature,
            "detector": det.key,
            "detector_params": det.params,
            "statistic": diff,
            "threshold": threshold if math.isfinite(threshold) else 0.0,
            "confidence": confidence,
            "reference": ref,
            "current": cur,
            "topic": pos.topic,
            "partition": pos.partition,
            "first_offset": int(fm.offsets[idx[0]]),
            "last_offset": pos.offset,
            "window_start_event_time": int(fm.times[idx[0]]),
            "window_end_event_time": pos.event_time,
            "worker_id": self.config.worker_id,
            "app_version": self.config.app_version,
            "detected_at": now_ms,
        }
        return record

    def _stat(self, st: SliceState, feature: str, fm: FeatureMonitor, pos: Position, now_ms: int) -> dict[str, Any]:
        iv, ref = fm.interval, fm.reference
        total = iv.n + iv.missing
        if ref.n > 1 and iv.n > 0:
            drift_score = abs(iv.mean - ref.mean) / (math.sqrt(ref.var / iv.n) or 1e-12)
        else:
            drift_score = 0.0
        first = fm.interval_first or pos
        state = "warmup" if fm.seen <= self.config.warmup_events else ("drift" if fm.seen <= fm.quiet_until else "stable")
        record = {
            "schema_version": STAT.version,
            "stat_id": alert_id_for(st.model, st.slice, feature, "stat", pos),
            "model": st.model,
            "slice": st.slice,
            "feature": feature,
            "detector": fm.detector.key,
            "count": total,
            "mean": iv.mean,
            "std": math.sqrt(iv.var),
            "missing_rate": iv.missing / total if total else 0.0,
            "drift_score": min(drift_score, 1e12),
            "detector_state": state,
            "topic": pos.topic,
            "partition": pos.partition,
            "first_offset": first.offset,
            "last_offset": pos.offset,
            "window_start_event_time": first.event_time,
            "window_end_event_time": pos.event_time,
            "worker_id": self.config.worker_id,
            "emitted_at": now_ms,
        }
        fm.interval, fm.interval_first = _Running(), None
        return record
