"""Per-(model, slice) drift monitoring as pure functions of the event stream.

Nothing here touches Kafka or the clock: the agent passes decoded events with their
topic/partition/offset, and gets back alert and stat records to send. Given the same
events at the same offsets, a monitor produces the same alerts with the same ids, which
is what makes replays after a restart idempotent.

Each watched thing of a slice is a *group* (a numeric or categorical feature, the
prediction error, the label) holding *channels*: one detector on one derived stream.

| group            | channel    | detector (default)       | alert             |
|------------------|------------|--------------------------|-------------------|
| numeric feature  | mean       | adwin                    | DATA_DRIFT        |
|                  | variance   | adwin_variance           | DATA_DRIFT        |
|                  | missing    | bernoulli_cusum on 0/1   | DATA_QUALITY      |
|                  | range      | bernoulli_cusum on 0/1   | DATA_QUALITY      |
| categorical      | category   | chi_square               | DATA_DRIFT        |
|                  | missing    | bernoulli_cusum on 0/1   | DATA_QUALITY      |
| error (feature null) | error  | bernoulli_cusum on 0/1 misclassification | PERFORMANCE_DRIFT |
|                  | error_pos, error_neg | bernoulli_cusum on misclassification among label 1 / label 0 | PERFORMANCE_DRIFT |
|                  | abs_error  | adwin on the absolute error (non-binary labels) | PERFORMANCE_DRIFT |
| label            | label      | adwin                    | LABEL_DRIFT       |

The model config (:mod:`streams.model_config`) may swap detectors, parameters and warm-up
per model and feature, switch channels off or ignore features.

Noise control: a channel is quiet for ``warmup_events``; an ADWIN detection is only a
candidate (self-confirming detectors such as the CUSUM skip this) until the next ``confirm_events`` values confirm the shift (same direction, at
least half the size), so blips stay quiet; after an alert, every channel of that group with
the same alert type is quiet for ``cooldown_events``. Values out of the reference range
are data-quality problems and are kept away from the distribution detectors.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from scipy.stats import rankdata

from schemas.codec import ALERT, STAT
from streams.detectors import ChiSquareDetector, Detector

BUFFER = 1024  # recent values kept per channel, for window summaries and provenance
MASK = BUFFER - 1  # BUFFER is a power of two
MIN_CURRENT = 20  # fewest values after an estimated change point
LLR_SHARE = 0.4  # a spread mix change holds when the values since keep this share of KL(new || old)
SCORE_REFERENCE = 1000  # a numeric feature's first values (out-of-range ones aside): what drift_score compares to
STATE_VERSION = 5  # bump when SliceState's shape changes: older snapshots then start fresh
ERROR_GROUP = "\x00error"  # group key of the prediction error; its alerts have feature null
LABEL_GROUP = "label"


@dataclass(frozen=True)
class MonitorConfig:
    warmup_events: int = 100
    cooldown_events: int = 500
    confirm_events: int = 60
    stats_every_events: int = 1000
    range_reference: int = 200  # values that define a numeric feature's valid range
    range_margin: float = 2.0  # valid range = reference [min, max] widened by this many spans
    # (and a feature never negative in its reference may not go negative: -1 sentinels)
    worker_id: str = "worker"
    app_version: str = "0.1.0"


class Position(NamedTuple):
    """Where an event came from; alerts and stats carry it as provenance. A tuple: one per event."""

    topic: str
    partition: int
    offset: int
    event_time: int


RawPosition = tuple[str, int, int, int]  # a Position's fields as a plain tuple (hot path, snapshots)


class _Running:
    """Welford mean/variance plus a missing count."""

    __slots__ = ("m2", "mean", "missing", "n")

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.missing = 0, 0.0, 0.0, 0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def var(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


def summarize(values: list[float]) -> dict[str, float | int]:
    n = len(values)
    if n == 0:
        return {"count": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"count": n, "mean": mean, "std": math.sqrt(var), "min": min(values), "max": max(values)}


def _log_likelihood_ratios(new: dict[Any, float], n_new: int, old: dict[Any, float], n_old: int) -> dict[Any, float]:
    """log(p_new(c) / p_old(c)) per category, both mixes smoothed by half a count per cell (key
    None: a category neither saw); a value's mean over draws of the old mix is about -KL < 0."""
    cats = set(new) | set(old)
    k = len(cats) + 1
    out = {c: math.log((new.get(c, 0.0) * n_new + 0.5) / (n_new + 0.5 * k))
           - math.log((old.get(c, 0.0) * n_old + 0.5) / (n_old + 0.5 * k)) for c in cats}
    out[None] = math.log(0.5 / (n_new + 0.5 * k)) - math.log(0.5 / (n_old + 0.5 * k))
    return out


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


class Channel:
    """One detector on one derived stream, with the recent values an alert explains itself by."""

    __slots__ = (
        "alert_type",
        "categorical",
        "derived",
        "detector",
        "epoch",
        "name",
        "pending",
        "positions",
        "quiet_until",
        "seen",
        "self_confirming",
        "values",
    )  # fmt: skip

    def __init__(self, name: str, alert_type: str, detector: Detector, quiet_until: int):
        self.name, self.alert_type, self.detector = name, alert_type, detector
        self.self_confirming = getattr(detector, "confirms", False)  # e.g. a CUSUM: no blip check needed
        self.derived = getattr(detector, "derived_signal", False)  # it tests e.g. |x_t - x_{t-1}|, not x
        self.categorical = isinstance(detector, ChiSquareDetector)
        self.seen = 0
        # buffered values before this count are not comparable: before the last alert (the old
        # regime, already reported) or, for a derived signal, from its calibration (raw units)
        self.epoch = getattr(detector, "calibrate", 0) if self.derived else 0
        self.quiet_until = quiet_until
        self.values: list[Any] = [0.0] * BUFFER
        self.positions: list[RawPosition | None] = [None] * BUFFER
        self.pending: tuple[int, float, float, int] | None = None  # (seen at cut, ref mean, cur mean, n_cur)

    def _recent(self, n: int) -> list[int]:
        n = min(n, self.seen, BUFFER)
        return [i % BUFFER for i in range(self.seen - n, self.seen)]

    def feed(self, x: Any, pos: RawPosition, confirm_events: int) -> Finding | None:
        det = self.detector
        fired = det.update(x)
        seen = self.seen
        i = seen & MASK
        self.values[i] = det.last_input if self.derived else x
        self.positions[i] = pos
        self.seen = seen = seen + 1
        if seen <= self.quiet_until:
            self.pending = None
            return None
        pending = self.pending
        if pending is not None:
            if seen - pending[0] >= confirm_events:
                return self._confirm_categorical(pos) if self.categorical else self._confirm(pos)
            return None
        if fired:
            if self.categorical:
                finding = self._categorical_finding(pos)
                if confirm_events == 0:
                    return finding
                self._open_categorical_candidate(finding)
                return None
            self._open_candidate()
            if self.pending is None:  # not even two comparable values to place the change
                return None
            if confirm_events == 0 or self.self_confirming:
                return self._confirm(pos)
        return None

    def _open_candidate(self) -> None:
        """Split the buffered values where the shift is most significant: the change point.

        The detector's own window is no guide: after a cut ADWIN keeps hundreds of values
        from before the change, and a 'current' mean over them hid a doubled variance
        (measured: 1.77 against 1.76, so the shift's sign was noise and the check failed).
        The split is chosen on ranks, so a few extreme values do not pull it to the last
        handful; the current part has at least ``MIN_CURRENT`` values.
        """
        idx = self._recent(self.seen - self.epoch)
        vals = [self.values[i] for i in idx]
        n = len(vals)
        if n < 2:
            return
        if n < 2 * MIN_CURRENT:  # early (a small warm-up): the detector's own window splits
            n_cur = max(1, min(self.detector.window, n - 1))
        else:
            n_cur = self._change_point(vals)
        ref, cur = vals[:-n_cur], vals[-n_cur:]
        self.pending = (self.seen, sum(ref) / len(ref), sum(cur) / len(cur), n_cur)

    @staticmethod
    def _change_point(vals: list[Any]) -> int:
        """Values in the current part (at least ``MIN_CURRENT``) of the most significant split."""
        n = len(vals)
        ranks = rankdata(vals)
        total = float(ranks.sum())
        best, n_cur, tail = -1.0, MIN_CURRENT, float(ranks[n - MIN_CURRENT + 1:].sum())
        for k in range(MIN_CURRENT, min(n - MIN_CURRENT, BUFFER // 2) + 1):  # k = values in the current part
            tail += ranks[n - k]
            score = abs(tail / k - (total - tail) / (n - k)) * math.sqrt(k * (n - k) / n)
            if score > best:
                best, n_cur = score, k
        return n_cur

    def _holds(self, post: list[Any], ref: float, shift: float, of: Callable[[Any], float], share: float = 0.25) -> bool:
        """The change held: the values since the cut, and their latest half alone, still show it
        (same direction, at least a quarter of the size), so a burst that ended stays quiet.

        A quarter, not more: the shift estimated at the cut is the largest over all splits, so
        it overstates the change, and a rejected real change is not seen again (the detector
        has adapted to it). A burst over by the latest half leaves that half near zero.
        Categories ask for half: a rejected mix change is tested again (the reference is kept)."""
        if not post:
            return True
        for part in (post, post[len(post) // 2:]):
            moved = sum(of(v) for v in part) / len(part) - ref
            if moved * shift <= 0 or abs(moved) < share * abs(shift):
                return False
        return True

    def _confirm(self, pos: RawPosition) -> Finding | None:
        cut_seen, ref_mean, cur_mean, n_cur = self.pending
        self.pending = None
        after = self.seen - cut_seen
        post = [self.values[i] for i in self._recent(after)] if after else []
        shift = cur_mean - ref_mean
        if not self._holds(post, ref_mean, shift, float):
            # a blip, or a real change the post values do not show yet: back to the old regime,
            # so it is cut again if it is real (the detector had adapted to it)
            rewind = getattr(self.detector, "rewind", None)
            if rewind is not None:
                idx = self._recent(self.seen - self.epoch)
                rewind([self.values[i] for i in idx[: max(len(idx) - after - n_cur, 0)]])
            return None
        idx = self._recent(self.seen - self.epoch)
        n_window = min(n_cur + after, len(idx) - 1)
        ref_vals = [self.values[i] for i in idx[:-n_window]]
        cur_vals = [self.values[i] for i in idx[-n_window:]]
        ref, cur = summarize(ref_vals), summarize(cur_vals)
        diff = abs(cur["mean"] - ref["mean"])
        pooled_var = max((ref["std"] ** 2 + cur["std"] ** 2) / 2.0, 1e-12)
        threshold = self.detector.threshold(max(len(ref_vals), 1), len(cur_vals), pooled_var)
        se = math.sqrt(ref["std"] ** 2 / max(len(ref_vals), 1) + cur["std"] ** 2 / max(len(cur_vals), 1)) or 1e-12
        first = self.positions[idx[0]] or pos
        return Finding(
            statistic=diff,
            threshold=threshold if math.isfinite(threshold) else 0.0,
            confidence=math.erf(diff / se / math.sqrt(2.0)),
            effect=diff / math.sqrt(pooled_var),
            reference=ref,
            current=cur,
            first=Position(pos[0], pos[1], first[2], first[3]),
        )

    def _open_categorical_candidate(self, finding: Finding) -> None:
        det: ChiSquareDetector = self.detector  # type: ignore[assignment]
        top = finding.extra_params["category"]
        ref_share = finding.reference["mean"]
        llr = _log_likelihood_ratios(det.last_current_mix, det.window, det.last_reference_mix, det.last_n_ref)
        # under the new mix the mean log-likelihood ratio is KL(new || old) > 0, under the old
        # one -KL(old || new) < 0
        kl = sum(p * llr.get(c, llr[None]) for c, p in det.last_current_mix.items())
        self.pending = (self.seen, finding, top, ref_share, finding.current["mean"] - ref_share, llr, kl)

    def _confirm_categorical(self, pos: RawPosition) -> Finding | None:
        """The mix must stay changed after the test fired: its most moved category keeps at
        least half its move, or, for a change spread over many categories, the values since
        (and their latest half) are likelier under the new mix than under the old one. A
        burst that ended puts the test's old reference back (its window became the
        reference when it fired)."""
        cut_seen, finding, top, ref_share, shift, llr, kl = self.pending
        self.pending = None
        post = [self.values[i] for i in self._recent(self.seen - cut_seen)]
        unseen = llr[None]
        # a share of the KL only: the fired window's mix is noisy
        if (self._holds(post, ref_share, shift, lambda v: 1.0 if str(v) == top else 0.0, share=0.5)
                or (kl > 0 and self._holds(post, 0.0, kl, lambda v: llr.get(v, unseen), share=LLR_SHARE))):
            return finding
        self.detector.restore_reference()
        return None

    def _categorical_finding(self, pos: RawPosition) -> Finding:
        det: ChiSquareDetector = self.detector  # type: ignore[assignment]
        ref_mix, cur_mix = det.last_reference_mix, det.last_current_mix
        idx = self._recent(det.window)
        first = (self.positions[idx[0]] if idx else None) or pos
        shifts = {c: cur_mix.get(c, 0.0) - ref_mix.get(c, 0.0) for c in set(ref_mix) | set(cur_mix)}
        top = max(shifts, key=lambda c: abs(shifts[c])) if shifts else ""
        tv = 0.5 * sum(abs(v) for v in shifts.values())
        return Finding(
            statistic=det.statistic,
            threshold=det.threshold,
            confidence=1.0 - det.p_value,
            effect=tv * 4,  # total variation 0.125 -> MEDIUM, 0.375 -> HIGH
            reference={"count": det.last_n_ref, "mean": ref_mix.get(top, 0.0), "std": 0.0,
                       "min": min(ref_mix.values(), default=0.0), "max": max(ref_mix.values(), default=0.0)},
            current={"count": det.window, "mean": cur_mix.get(top, 0.0), "std": 0.0,
                     "min": min(cur_mix.values(), default=0.0), "max": max(cur_mix.values(), default=0.0)},
            first=Position(pos[0], pos[1], first[2], first[3]),
            extra_params={
                "category": str(top),
                "reference_mix": json.dumps({str(k): round(v, 4) for k, v in sorted(ref_mix.items(), key=str)}),
                "current_mix": json.dumps({str(k): round(v, 4) for k, v in sorted(cur_mix.items(), key=str)}),
            },
        )


class Group:
    """Everything watched for one feature (or the error, or the label) of one slice.

    The channels are also attributes by name (None when not watched), so the per-event
    path reads them without dict lookups.
    """

    __slots__ = (
        "abs_error",
        "category",
        "channels",
        "error",
        "error_neg",
        "error_pos",
        "feature",
        "hi",
        "interval",
        "interval_first",
        "label",
        "lo",
        "mean",
        "missing",
        "range",
        "range_ready",
        "range_seen",
        "reference",
        "variance",
    )  # fmt: skip

    def __init__(self, feature: str | None, channels: dict[str, Channel]):
        self.feature = feature
        self.channels = channels
        for name in CHANNEL_NAMES:
            setattr(self, name, channels.get(name))
        self.interval = _Running()  # since the last DriftStat
        self.interval_first: RawPosition | None = None
        self.reference = _Running()  # the first SCORE_REFERENCE values: what drift_score compares to
        self.range_seen: list[float] = []
        self.lo, self.hi = -math.inf, math.inf
        self.range_ready = False


@dataclass
class SliceState:
    """Everything monitored for one (model, slice); the unit of snapshot and restore.

    ``numeric`` and ``categorical`` map a feature name to its group, or to None when the
    model config ignores that feature.
    """

    model: str
    slice: str
    numeric: dict[str, Group | None] = field(default_factory=dict)
    categorical: dict[str, Group | None] = field(default_factory=dict)
    label: Group | None = None
    error: Group | None = None
    last_offset: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> last offset applied
    events_since_snapshot: int = 0
    events: int = 0
    version: int = STATE_VERSION

    @property
    def groups(self) -> dict[str, Group]:
        """Every watched group by key (f:name, c:name, label, error), for stats and tests."""
        out: dict[str, Group] = {}
        out.update({"f:" + k: g for k, g in self.numeric.items() if g is not None})
        out.update({"c:" + k: g for k, g in self.categorical.items() if g is not None})
        if self.label is not None:
            out[LABEL_GROUP] = self.label
        if self.error is not None:
            out[ERROR_GROUP] = self.error
        return out


@dataclass
class Output:
    state: SliceState | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)


# (channel, alert type) per kind of group; which are watched, and how, is up to the prototypes
# and the model config (streams.model_config)
GROUP_CHANNELS: dict[str, tuple[tuple[str, str], ...]] = {
    "numeric": (("mean", "DATA_DRIFT"), ("variance", "DATA_DRIFT"), ("missing", "DATA_QUALITY"),
                ("range", "DATA_QUALITY")),
    "categorical": (("category", "DATA_DRIFT"), ("missing", "DATA_QUALITY")),
    "label": (("label", "LABEL_DRIFT"),),
    "error": (("error", "PERFORMANCE_DRIFT"), ("error_pos", "PERFORMANCE_DRIFT"), ("error_neg", "PERFORMANCE_DRIFT"),
              ("abs_error", "PERFORMANCE_DRIFT")),
}  # fmt: skip
NUMERIC_CHANNELS = GROUP_CHANNELS["numeric"]
CATEGORICAL_CHANNELS = GROUP_CHANNELS["categorical"]
CHANNEL_NAMES = tuple(dict.fromkeys(name for spec in GROUP_CHANNELS.values() for name, _ in spec))

# model, group kind, feature (None for the error) -> channel -> (prototype, warm-up events);
# None: the feature is ignored
ChannelPlan = Callable[[str, str, "str | None"], "dict[str, tuple[Detector, int]] | None"]


class Monitor:
    """Slices and features discovered on the fly; each gets clones of the prototype detectors.

    ``prototypes`` maps a channel name (mean, variance, missing, range, category, label,
    error, abs_error) to its prototype detector; a channel without a prototype is not
    watched. ``plan`` (optional, see :mod:`streams.model_config`) overrides that per model
    and feature: other detectors, parameters or warm-up, or the feature ignored.
    """

    def __init__(
        self,
        prototypes: dict[str, Detector],
        config: MonitorConfig,
        loader: Callable[[str, str], SliceState | None] | None = None,
        plan: ChannelPlan | None = None,
    ):
        self.prototypes = prototypes
        self.config = config
        self.loader = loader
        self.plan = plan
        self.confirm_events = config.confirm_events
        self.slices: dict[tuple[str, str], SliceState] = {}
        self._plans: dict[tuple[str, str, str | None], dict[str, tuple[Detector, int]] | None] = {}

    def state(self, model: str, slice_: str) -> SliceState:
        key = (model, slice_)
        st = self.slices.get(key)
        if st is None:
            st = (self.loader(model, slice_) if self.loader else None) or SliceState(model, slice_)
            self.slices[key] = st
        return st

    def _channels(self, model: str, kind: str, feature: str | None) -> dict[str, tuple[Detector, int]] | None:
        key = (model, kind, feature)
        if key not in self._plans:
            if self.plan is not None:
                self._plans[key] = self.plan(model, kind, feature)
            else:
                warm = self.config.warmup_events
                names = [name for name, _ in GROUP_CHANNELS[kind]]
                self._plans[key] = {n: (self.prototypes[n], warm) for n in names if n in self.prototypes}
        return self._plans[key]

    def _new_group(self, model: str, kind: str, feature: str | None) -> Group | None:
        plan = self._channels(model, kind, feature)
        if plan is None:
            return None
        channels = {
            name: Channel(name, alert_type, plan[name][0].clone(), plan[name][1])
            for name, alert_type in GROUP_CHANNELS[kind]
            if name in plan
        }
        return Group(feature, channels)

    def observe(self, event: dict[str, Any], topic: str, partition: int, offset: int, now_ms: int) -> Output:
        st = self.state(event["model"], event["slice"])
        out = Output(state=st)
        where = (topic, partition)
        if offset <= st.last_offset.get(where, -1):
            return out  # already applied (replay after restore): state must not double count
        st.last_offset[where] = offset
        st.events_since_snapshot += 1
        st.events += 1
        # a plain tuple, not a Position: the channels keep 1024 of them each, and plain tuples
        # pickle in C (a NamedTuple costs a Python call each), which keeps snapshots cheap
        pos = (topic, partition, offset, event["event_time"])
        confirm = self.confirm_events
        groups = st.numeric
        for name, value in event["features"].items():
            try:
                g = groups[name]
            except KeyError:
                g = groups[name] = self._new_group(st.model, "numeric", name)
            if g is not None:
                self._numeric(st, g, value, pos, now_ms, out)
        categorical = event.get("categorical")
        if categorical:
            groups = st.categorical
            for name, value in categorical.items():
                try:
                    g = groups[name]
                except KeyError:
                    g = groups[name] = self._new_group(st.model, "categorical", name)
                if g is not None:
                    self._categorical(st, g, value, pos, now_ms, out)
        label = event.get("label")
        if label is not None:
            g = st.label
            if g is None:
                g = st.label = self._new_group(st.model, "label", LABEL_GROUP)
            if g is not None and g.label is not None:
                f = g.label.feed(float(label), pos, confirm)
                if f is not None:
                    self._fire(st, g, g.label, f, pos, now_ms, out)
            prediction = event.get("prediction")
            if prediction is not None:
                g = st.error
                if g is None:
                    g = st.error = self._new_group(st.model, "error", None)
                if g is not None:
                    if label in (0, 1) and 0.0 <= prediction <= 1.0:  # binary: 0/1 misclassification
                        err = float((prediction >= 0.5) != (label == 1))
                        # overall, and within the class: a recall drop on 3% positives barely
                        # moves the overall error (1.3% -> 3%) but is 10% -> 70% among positives
                        channels = (g.error, g.error_pos if label == 1 else g.error_neg)
                    else:  # regression: absolute error
                        err, channels = abs(prediction - float(label)), (g.abs_error,)
                    for ch in channels:
                        if ch is not None:
                            f = ch.feed(err, pos, confirm)
                            if f is not None:
                                self._fire(st, g, ch, f, pos, now_ms, out)
        return out

    def _numeric(self, st: SliceState, g: Group, value: float | None, pos: RawPosition, now_ms: int, out: Output) -> None:
        confirm = self.confirm_events
        if g.interval_first is None:
            g.interval_first = pos
        missing = value is None or value != value  # noqa: PLR0124 - None or NaN, without a call
        ch = g.missing
        if ch is not None:
            f = ch.feed(1.0 if missing else 0.0, pos, confirm)
            if f is not None:
                self._fire(st, g, ch, f, pos, now_ms, out)
        iv = g.interval
        if missing:
            iv.missing += 1
        else:
            if g.range_ready:
                out_of_range = value < g.lo or value > g.hi  # +-inf included
                if g.range is not None:
                    f = g.range.feed(1.0 if out_of_range else 0.0, pos, confirm)
                    if f is not None:
                        self._fire(st, g, g.range, f, pos, now_ms, out)
            else:
                out_of_range = self._learn_range(g, value)
            if not out_of_range:
                # Welford for the stat interval and the drift-score reference, inlined (hot path)
                iv.n += 1
                d = value - iv.mean
                iv.mean += d / iv.n
                iv.m2 += d * (value - iv.mean)
                ref = g.reference
                if ref.n < SCORE_REFERENCE:
                    ref.n += 1
                    d = value - ref.mean
                    ref.mean += d / ref.n
                    ref.m2 += d * (value - ref.mean)
                if g.mean is not None:
                    f = g.mean.feed(value, pos, confirm)
                    if f is not None:
                        self._fire(st, g, g.mean, f, pos, now_ms, out)
                if g.variance is not None:
                    f = g.variance.feed(value, pos, confirm)
                    if f is not None:
                        self._fire(st, g, g.variance, f, pos, now_ms, out)
        if iv.n + iv.missing >= self.config.stats_every_events:
            out.stats.append(self._stat(st, g, pos, now_ms))

    def _learn_range(self, g: Group, value: float) -> bool:
        """Before the range is set: collect ``value`` toward it; True only for +-inf."""
        if math.isinf(value):
            return True
        g.range_seen.append(value)
        if len(g.range_seen) >= self.config.range_reference:
            lo, hi = min(g.range_seen), max(g.range_seen)
            span = max(hi - lo, abs(hi), abs(lo), 1e-9)  # generous: a shift of N(1000, 5) is drift, not range
            g.lo, g.hi = lo - self.config.range_margin * span, hi + self.config.range_margin * span
            if lo >= 0.0:  # a count, amount or age: a negative value is a sentinel, not drift
                g.lo = max(g.lo, 0.0)
            g.range_ready, g.range_seen = True, []
        return False

    def _categorical(self, st: SliceState, g: Group, value: str | None, pos: RawPosition, now_ms: int, out: Output) -> None:
        confirm = self.confirm_events
        if g.missing is not None:
            f = g.missing.feed(1.0 if value is None else 0.0, pos, confirm)
            if f is not None:
                self._fire(st, g, g.missing, f, pos, now_ms, out)
        if value is not None and g.category is not None:
            f = g.category.feed(value, pos, confirm)
            if f is not None:
                self._fire(st, g, g.category, f, pos, now_ms, out)

    def _fire(self, st: SliceState, g: Group, ch: Channel, finding: Finding, pos: RawPosition, now_ms: int,
              out: Output) -> None:
        """A channel confirmed a change: quiet its group's channels of that type, emit the alert."""
        pos = Position(*pos)
        # the cooldown is in events of the group: a class-wise error channel that sees 3% of
        # them is quiet for 3% of it (500 of its own values would hide a later recall drop)
        events = max(c.seen for c in g.channels.values()) or 1
        for other in g.channels.values():
            if other.alert_type == ch.alert_type:
                other.quiet_until = other.seen + math.ceil(self.config.cooldown_events * other.seen / events)
                other.pending = None
                other.epoch = other.seen
        out.alerts.append(self._alert(st, g, ch, finding, pos, now_ms))

    def _alert(self, st: SliceState, g: Group, ch: Channel, f: Finding, pos: Position, now_ms: int) -> dict[str, Any]:
        det = ch.detector
        return {
            "schema_version": ALERT.version,
            "alert_id": alert_id_for(st.model, st.slice, g.feature, det.key + ":" + ch.name, pos),
            "alert_type": ch.alert_type,
            "severity": severity_for(f.effect),
            "model": st.model,
            "slice": st.slice,
            "feature": g.feature,
            "detector": det.key,
            "detector_params": {**det.params, **getattr(det, "detection_params", {}), "channel": ch.name,
                                **f.extra_params},
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
            "worker_id": self.config.worker_id,
            "app_version": self.config.app_version,
            "detected_at": now_ms,
        }

    def _stat(self, st: SliceState, g: Group, pos: RawPosition, now_ms: int) -> dict[str, Any]:
        pos = Position(*pos)
        iv, ref = g.interval, g.reference
        total = iv.n + iv.missing
        # effect size against the feature's first values: 0.03 is noise for a 1,000-value interval,
        # 1 a shift of one reference sd; it stays up while the slice stays drifted
        drift_score = abs(iv.mean - ref.mean) / (math.sqrt(ref.var) or 1e-12) if ref.n > 1 and iv.n else 0.0
        first = Position(*g.interval_first) if g.interval_first else pos
        mean_ch = g.channels.get("mean")
        seen = mean_ch.seen if mean_ch else iv.n
        in_cooldown = any(c.seen <= c.quiet_until and c.seen > self.config.warmup_events for c in g.channels.values())
        state = "warmup" if seen <= self.config.warmup_events else ("drift" if in_cooldown else "stable")
        record = {
            "schema_version": STAT.version,
            "stat_id": alert_id_for(st.model, st.slice, g.feature, "stat", pos),
            "model": st.model,
            "slice": st.slice,
            "feature": g.feature or "",
            "detector": mean_ch.detector.key if mean_ch else "",
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
        g.interval, g.interval_first = _Running(), None
        return record
