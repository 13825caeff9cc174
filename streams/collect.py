"""A batch's events of one slice, sorted into its groups' channel inputs.

What a group does per event on its own (is the value missing, out of its range, the
interval and reference statistics, when a DriftStat is due) does not depend on its
channels, so it is done here, in one pass over the slice's events, and each channel gets
the list of values it would have been fed (:class:`streams.batch.ChannelInput`).
"""

from __future__ import annotations

import math
from typing import Any

from streams.batch import ChannelInput
from streams.records import RawPosition, StatPoint
from streams.state import Group, RunningStats

SCORE_REFERENCE = 1000  # a numeric feature's first values (out-of-range ones aside): what drift_score compares to


class _Stream:
    """The values one channel (or two, mean and variance) gets in a batch."""

    __slots__ = ("events", "positions", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.events: list[int] = []
        self.positions: list[RawPosition] = []

    def add(self, x: Any, e: int, pos: RawPosition) -> None:
        self.values.append(x)
        self.events.append(e)
        self.positions.append(pos)


class GroupBatch:
    """One group's share of a batch; :meth:`inputs` hands it to :func:`streams.batch.run_group`."""

    __slots__ = ("g", "rank", "stats", "streams")

    def __init__(self, g: Group, rank: int):
        self.g, self.rank = g, rank  # rank: the group's place among an event's groups (output order)
        self.streams: dict[str, _Stream] = {}
        self.stats: list[tuple[int, StatPoint]] = []

    def stream(self, *names: str) -> _Stream | None:
        """One shared stream for the watched channels among ``names`` (None if none is)."""
        watched = [n for n in names if self.g.channels.get(n) is not None]
        if not watched:
            return None
        s = _Stream()
        for n in watched:
            self.streams[n] = s
        return s

    def inputs(self) -> list[ChannelInput]:
        return [ChannelInput(self.g.channels[n], s.values, s.events, s.positions) for n, s in self.streams.items()
                if s.values]  # fmt: skip


class NumericBatch(GroupBatch):
    __slots__ = ("margin", "missing", "range", "range_reference", "signal", "stats_every")

    def __init__(self, g: Group, rank: int, stats_every: int, range_reference: int, range_margin: float):
        super().__init__(g, rank)
        self.stats_every, self.range_reference, self.margin = stats_every, range_reference, range_margin
        self.missing = self.stream("missing")
        self.range = self.stream("range")
        self.signal = self.stream("mean", "variance")

    def add(self, e: int, value: float | None, pos: RawPosition) -> None:
        g = self.g
        if g.interval_first is None:
            g.interval_first = pos
        missing = value is None or value != value  # noqa: PLR0124 - None or NaN, without a call
        if self.missing is not None:
            self.missing.add(1.0 if missing else 0.0, e, pos)
        iv = g.interval
        if missing:
            iv.missing += 1
        else:
            if g.range_ready:
                out_of_range = value < g.lo or value > g.hi  # +-inf included
                if self.range is not None:
                    self.range.add(1.0 if out_of_range else 0.0, e, pos)
            else:
                out_of_range = self._learn_range(value)
            if not out_of_range:  # Welford for the stat interval and the drift-score reference
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
                if self.signal is not None:
                    self.signal.add(value, e, pos)
        if iv.n + iv.missing >= self.stats_every:
            ref = g.reference
            self.stats.append((e, StatPoint(pos, g.interval_first, iv.n, iv.mean, iv.var, iv.missing, ref.n, ref.mean,
                                            ref.var)))  # fmt: skip
            g.interval, g.interval_first = RunningStats(), None

    def _learn_range(self, value: float) -> bool:
        """Before the range is set: collect ``value`` toward it; True only for +-inf."""
        if math.isinf(value):
            return True
        g = self.g
        g.range_seen.append(value)
        if len(g.range_seen) >= self.range_reference:
            lo, hi = min(g.range_seen), max(g.range_seen)
            span = max(hi - lo, abs(hi), abs(lo), 1e-9)  # generous: a shift of N(1000, 5) is drift, not range
            g.lo, g.hi = lo - self.margin * span, hi + self.margin * span
            if lo >= 0.0:  # a count, amount or age: a negative value is a sentinel, not drift
                g.lo = max(g.lo, 0.0)
            g.range_ready, g.range_seen = True, []
        return False


class CategoricalBatch(GroupBatch):
    __slots__ = ("category", "missing")

    def __init__(self, g: Group, rank: int):
        super().__init__(g, rank)
        self.missing = self.stream("missing")
        self.category = self.stream("category")

    def add(self, e: int, value: str | None, pos: RawPosition) -> None:
        if self.missing is not None:
            self.missing.add(1.0 if value is None else 0.0, e, pos)
        if value is not None and self.category is not None:
            self.category.add(value, e, pos)


class LabelBatch(GroupBatch):
    __slots__ = ("label",)

    def __init__(self, g: Group, rank: int):
        super().__init__(g, rank)
        self.label = self.stream("label")

    def add(self, e: int, label: float, pos: RawPosition) -> None:
        if self.label is not None:
            self.label.add(float(label), e, pos)


class ErrorBatch(GroupBatch):
    __slots__ = ("abs_error", "error", "error_neg", "error_pos")

    def __init__(self, g: Group, rank: int):
        super().__init__(g, rank)
        self.error, self.error_pos, self.error_neg = self.stream("error"), self.stream("error_pos"), self.stream("error_neg")
        self.abs_error = self.stream("abs_error")

    def add(self, e: int, label: float, prediction: float, pos: RawPosition) -> None:
        if label in (0, 1) and 0.0 <= prediction <= 1.0:  # binary: 0/1 misclassification
            err = float((prediction >= 0.5) != (label == 1))
            # overall, and within the class: a recall drop on 3% positives barely
            # moves the overall error (1.3% -> 3%) but is 10% -> 70% among positives
            if self.error is not None:
                self.error.add(err, e, pos)
            within = self.error_pos if label == 1 else self.error_neg
            if within is not None:
                within.add(err, e, pos)
        elif self.abs_error is not None:  # regression: absolute error
            self.abs_error.add(abs(prediction - float(label)), e, pos)
