"""Per-(model, slice) drift monitoring as pure functions of the event stream.

Nothing here touches Kafka or the clock: the worker passes decoded events with their
topic/partition/offset, and gets back alert and stat records to send. Given the same
events at the same offsets, a monitor produces the same alerts with the same ids, which
is what makes replays after a restart idempotent.

Each watched thing of a slice is a *group* (:mod:`streams.state`) holding *channels*
(:mod:`streams.channel`): one detector on one derived stream.

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

Noise control: a channel is quiet for ``warmup_events``; a detection is only a candidate
(self-confirming detectors such as the CUSUM skip this) until the next ``confirm_events``
values confirm the shift (:mod:`streams.confirmation`), so blips stay quiet; after an alert,
every channel of that group with the same alert type is quiet for ``cooldown_events``.
Values out of the reference range are data-quality problems and are kept away from the
distribution detectors.

A batch is processed slice by slice and group by group (:mod:`streams.collect`,
:mod:`streams.batch`): each detector gets its values of the batch in one call, with the
same alerts as feeding them one event at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.event_columns import EventColumns
from streams.batch import run_group
from streams.channel import Channel, new_channel
from streams.collect import (
    ABSENT,
    Column,
    categorical_inputs,
    columns,
    error_inputs,
    label_inputs,
    new_events,
    new_positions,
    numeric_inputs,
)
from streams.detectors import Detector
from streams.records import Finding, Position, RawPosition, StatPoint, alert_record, stat_record
from streams.state import FEED_ORDER, GROUP_CHANNELS, LABEL_GROUP, Group, SliceState

# model, group kind, feature (None for the error) -> channel -> (prototype, warm-up events);
# None: the feature is ignored
ChannelPlan = Callable[[str, str, "str | None"], "dict[str, tuple[Detector, int]] | None"]
Item = tuple[dict[str, Any], str, int, int]  # (decoded event, topic, partition, offset)
# a slice's new events of a batch: batch indices, positions, numeric and categorical columns
# (name, values in event order; ABSENT where an event lacks it), labels, predictions
SliceColumns = tuple[list[int], list[RawPosition], list[tuple[str, list]], list[tuple[str, list]], list, list]
CATEGORICAL_RANK, LABEL_RANK, ERROR_RANK = 1 << 20, 2 << 20, 3 << 20  # after any numeric feature's rank


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


@dataclass
class Output:
    state: SliceState | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BatchOutput:
    """A batch's records, in the order one-event-at-a-time processing makes them."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    states: dict[tuple[str, str], SliceState] = field(default_factory=dict)  # slices the batch reached
    last: dict[tuple[str, str], int] = field(default_factory=dict)  # slice -> its last item in the batch
    failed: list[tuple[list[int], Exception]] = field(default_factory=list)  # (items of a slice, why it failed)


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
            name: new_channel(name, alert_type, plan[name][0].clone(), plan[name][1])
            for name, alert_type in GROUP_CHANNELS[kind]
            if name in plan
        }
        return Group(feature, channels)

    # ------------------------------------------------------------------ events in
    def observe(self, event: dict[str, Any], topic: str, partition: int, offset: int, now_ms: int) -> Output:
        """One event: a batch of one."""
        out = self.observe_batch([(event, topic, partition, offset)], now_ms)
        if out.failed:
            raise out.failed[0][1]
        return Output(self.slices.get((event["model"], event["slice"])), out.alerts, out.stats)

    def observe_batch(self, items: Sequence[Item], now_ms: int) -> BatchOutput:
        """A batch of events, slice by slice; a slice whose processing raises is reported in
        ``failed`` (its events are the caller's to dead-letter) and the others go on."""
        by_slice: dict[tuple[str, str], list[int]] = {}
        for e, item in enumerate(items):
            event = item[0]
            key = (event["model"], event["slice"])
            idx = by_slice.get(key)
            if idx is None:
                by_slice[key] = [e]
            else:
                idx.append(e)

        def slice_columns(st: SliceState, idx: list[int]) -> SliceColumns | None:
            events, E, P = new_events(st.last_offset, items, idx)
            if not events:
                return None
            return (E, P, columns([ev["features"] for ev in events]),
                    columns([ev.get("categorical") or {} for ev in events]),
                    [ev.get("label") for ev in events], [ev.get("prediction") for ev in events])  # fmt: skip

        return self._observe_slices(by_slice, slice_columns, now_ms)

    def observe_columns(self, cols: EventColumns, topics: Sequence[str], partitions: Sequence[int],
                        offsets: Sequence[int], now_ms: int) -> BatchOutput:
        """:meth:`observe_batch` of a batch decoded into columns (schemas.event_columns):
        the same records, without a dict per event."""

        def slice_columns(st: SliceState, idx: list[int]) -> SliceColumns | None:
            kept, E, P = new_positions(st.last_offset, idx, list(map(topics.__getitem__, idx)),
                                       list(map(partitions.__getitem__, idx)), list(map(offsets.__getitem__, idx)),
                                       list(map(cols.times.__getitem__, idx)))  # fmt: skip
            rows = idx if kept is None else [idx[j] for j in kept]
            if not rows:
                return None
            return E, P, cols.numeric(rows), cols.categorical(rows), cols.labels(rows), cols.predictions(rows)

        return self._observe_slices(cols.by_slice, slice_columns, now_ms)

    def _observe_slices(self, by_slice: dict[tuple[str, str], list[int]],
                        slice_columns: Callable[[SliceState, list[int]], SliceColumns | None], now_ms: int
                        ) -> BatchOutput:
        out = BatchOutput()
        alerts: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
        stats: list[tuple[tuple[int, int], dict[str, Any]]] = []
        for key, idx in by_slice.items():
            out.last[key] = idx[-1]
            try:
                st = out.states[key] = self.state(*key)
                found = slice_columns(st, idx)
                if found is not None:
                    self._slice_batch(st, *found, now_ms, alerts, stats)
            except Exception as exc:  # noqa: BLE001 - one slice's failure must not stop the others
                out.failed.append((idx, exc))
        alerts.sort(key=lambda a: a[0])
        stats.sort(key=lambda s: s[0])
        out.alerts = [a for _, a in alerts]
        out.stats = [s for _, s in stats]
        return out

    def _slice_batch(self, st: SliceState, E: list[int], P: list[RawPosition], numeric: list[tuple[str, list]],
                     categorical: list[tuple[str, list]], ys: list[Any], predictions: list[Any], now_ms: int,
                     alerts: list, stats: list) -> None:
        """One slice's new events of a batch, as columns: each group's channels through them."""
        st.events_since_snapshot += len(E)
        st.events += len(E)
        cfg = self.config
        for rank, (name, values) in enumerate(numeric):
            try:
                g = st.numeric[name]
            except KeyError:
                g = st.numeric[name] = self._new_group(st.model, "numeric", name)
            if g is not None:
                points: list[tuple[int, StatPoint]] = []
                col = Column.of(values, E, P)
                inputs = numeric_inputs(g, col, cfg.stats_every_events, cfg.range_reference, cfg.range_margin, points)
                self._run(st, g, rank, inputs, points, now_ms, alerts, stats)
        for rank, (name, values) in enumerate(categorical, CATEGORICAL_RANK):
            try:
                g = st.categorical[name]
            except KeyError:
                g = st.categorical[name] = self._new_group(st.model, "categorical", name)
            if g is not None:
                self._run(st, g, rank, categorical_inputs(g, Column.of(values, E, P)), [], now_ms, alerts, stats)
        if None in ys:
            ys = [ABSENT if y is None else y for y in ys]
        labels = Column.of(ys, E, P)
        if not labels.values:
            return
        if st.label is None:
            st.label = self._new_group(st.model, "label", LABEL_GROUP)
        if st.label is not None:
            self._run(st, st.label, LABEL_RANK, label_inputs(st.label, labels), [], now_ms, alerts, stats)
        if ABSENT in ys or None in predictions:  # the events with both
            keep = [j for j, (y, p) in enumerate(zip(ys, predictions)) if y is not ABSENT and p is not None]
            if not keep:
                return
            ys, E, P = Column(ys, E, P).take(keep)
            predictions = [predictions[j] for j in keep]
        if st.error is None:
            st.error = self._new_group(st.model, "error", None)
        if st.error is not None:
            inputs = error_inputs(st.error, Column(ys, E, P), predictions)
            self._run(st, st.error, ERROR_RANK, inputs, [], now_ms, alerts, stats)

    def _run(self, st: SliceState, g: Group, rank: int, inputs: list, points: list[tuple[int, StatPoint]],
             now_ms: int, alerts: list, stats: list) -> None:
        """The group's channels through the batch; records keyed by (event, group rank, channel order)."""
        cfg = self.config

        def on_alert(e: int, ch: Channel, f: Finding, pos: RawPosition) -> None:
            record = alert_record(st.model, st.slice, g.feature, ch.name, ch.alert_type, ch.detector, f,
                                  Position(*pos), cfg.worker_id, cfg.app_version, now_ms)  # fmt: skip
            alerts.append(((e, rank, FEED_ORDER[ch.name]), record))

        def on_stat(e: int, p: StatPoint, detector_key: str, state: str) -> None:
            stats.append(((e, rank), stat_record(st.model, st.slice, g.feature, detector_key, p, state,
                                                 cfg.worker_id, now_ms)))  # fmt: skip

        run_group(g, inputs, points, self.confirm_events, cfg.cooldown_events, cfg.warmup_events, on_alert, on_stat)
