"""A batch's events of one slice, sorted into its groups' channel inputs, column by column.

What a group does per event on its own (is the value missing, out of its range, the
interval and reference statistics, when a DriftStat is due) does not depend on its
channels, so it is done here, in one tight loop per group over the batch's values (no call
per value), and each channel gets the list of values it would have been fed
(:class:`streams.batch.ChannelInput`), sharing the slice's event and position lists when
it gets a value from every event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain, islice, repeat
from operator import itemgetter, lt
from typing import Any

from streams.batch import ChannelInput
from streams.records import RawPosition, StatPoint
from streams.state import Group

SCORE_REFERENCE = 1000  # a numeric feature's first values (out-of-range ones aside): what drift_score compares to
ABSENT = object()  # a feature an event does not carry: its group does not see that event
_EVENT_TIME = itemgetter("event_time")


class Column:
    """One group's values in a batch, with the batch index and position of each."""

    __slots__ = ("events", "positions", "values")

    def __init__(self, values: list[Any], events: list[int], positions: list[RawPosition]):
        self.values, self.events, self.positions = values, events, positions

    @classmethod
    def of(cls, values: list[Any], events: list[int], positions: list[RawPosition]) -> Column:
        """Without the events that do not carry the value (``ABSENT``)."""
        if ABSENT not in values:
            return cls(values, events, positions)
        keep = [j for j, v in enumerate(values) if v is not ABSENT]
        return cls([values[j] for j in keep], [events[j] for j in keep], [positions[j] for j in keep])

    def take(self, keep: list[int], values: list[Any] | None = None) -> tuple[list[Any], list[int], list[RawPosition]]:
        """The entries at ``keep`` (indices), sharing the lists when that is all of them."""
        if len(keep) == len(self.values):
            return (self.values if values is None else values), self.events, self.positions
        vals = [self.values[j] for j in keep] if values is None else values
        return vals, [self.events[j] for j in keep], [self.positions[j] for j in keep]


def new_events(last_offset: dict[tuple[str, int], int], items: Sequence[tuple[dict, str, int, int]], idx: list[int]
               ) -> tuple[list[dict[str, Any]], list[int], list[RawPosition]]:
    """The slice's events at ``idx`` not applied yet, their batch indices and positions
    (:func:`new_positions`); ``last_offset`` moves past them."""
    rows = list(map(items.__getitem__, idx))
    events, topics, partitions, offsets = zip(*rows)
    kept, E, P = new_positions(last_offset, idx, topics, partitions, offsets, list(map(_EVENT_TIME, events)))
    return (list(events) if kept is None else [events[j] for j in kept]), E, P


def new_positions(last_offset: dict[tuple[str, int], int], idx: list[int], topics: Sequence[str],
                  partitions: Sequence[int], offsets: Sequence[int], times: Sequence[int]
                  ) -> tuple[list[int] | None, list[int], list[RawPosition]]:
    """Which of a slice's events (batch indices ``idx``, with their topics, partitions,
    offsets and event times) are not applied yet (a replay after a restore repeats some:
    state must not count them twice): (their indices into ``idx``, or None for all; their
    batch indices; their positions). ``last_offset`` moves past them.

    Positions are plain tuples, not Positions: the channels keep 1024 of them each, and
    plain tuples pickle in C, which keeps snapshots cheap. Usually a slice's events of a
    batch come from one partition in offset order, all new: then in a few C-level passes.
    """
    n = len(idx)
    where = (topics[0], partitions[0])
    if (offsets[0] > last_offset.get(where, -1) and topics.count(where[0]) == n
            and partitions.count(where[1]) == n and all(map(lt, offsets, islice(offsets, 1, None)))):
        last_offset[where] = offsets[-1]
        return None, idx, list(zip(repeat(where[0]), repeat(where[1]), offsets, times))
    kept, E, P = [], [], []
    for j, (e, topic, partition, offset, time) in enumerate(zip(idx, topics, partitions, offsets, times)):
        where = (topic, partition)
        if offset <= last_offset.get(where, -1):
            continue
        last_offset[where] = offset
        kept.append(j)
        E.append(e)
        P.append((topic, partition, offset, time))
    return kept, E, P


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Every key of ``rows`` in first-seen order with its values (``ABSENT`` where a row has
    none); when every row has every key, by C-level gets and one transpose."""
    names = list(dict.fromkeys(chain.from_iterable(rows)))
    if not names:
        return []
    if len(names) == 1:
        name = names[0]
        return [(name, [row.get(name, ABSENT) for row in rows])]
    if set(map(len, rows)) == {len(names)}:  # each row's keys are all of them
        return list(zip(names, map(list, zip(*map(itemgetter(*names), rows)))))
    return [(name, [row.get(name, ABSENT) for row in rows]) for name in names]


def _input(g: Group, name: str, values: list[Any], events: list[int], positions: list[RawPosition]) -> list[ChannelInput]:
    ch = g.channels.get(name)
    return [ChannelInput(ch, values, events, positions)] if ch is not None and values else []


def numeric_inputs(g: Group, col: Column, stats_every: int, range_reference: int, range_margin: float,
                   stats: list[tuple[int, StatPoint]]) -> list[ChannelInput]:
    """Missing flags, range flags and in-range values of a numeric feature; its stat points."""
    vals, E, P = col.values, col.events, col.positions
    missing_flags: list[float] = []
    flag_missing = missing_flags.append
    range_flags: list[float] = []
    range_keep: list[int] = []
    signal_keep: list[int] = []
    keep_signal = signal_keep.append
    iv, ref = g.interval, g.reference
    n, mean, m2, missing = iv.n, iv.mean, iv.m2, iv.missing
    rn, rmean, rm2 = ref.n, ref.mean, ref.m2
    first = g.interval_first
    lo, hi, ready = g.lo, g.hi, g.range_ready
    for j, v in enumerate(vals):
        if first is None:
            first = P[j]
        if v is None or v != v:  # noqa: PLR0124 - None or NaN, without a call
            flag_missing(1.0)
            missing += 1
        else:
            flag_missing(0.0)
            if ready:
                out_of_range = v < lo or v > hi  # +-inf included
                range_flags.append(1.0 if out_of_range else 0.0)
                range_keep.append(j)
            elif math.isinf(v):  # before the range is set: collect toward it; only +-inf is out
                out_of_range = True
            else:
                out_of_range = False
                seen = g.range_seen
                seen.append(v)
                if len(seen) >= range_reference:
                    low, high = min(seen), max(seen)
                    span = max(high - low, abs(high), abs(low), 1e-9)  # generous: a shift of N(1000, 5) is drift
                    lo, hi = low - range_margin * span, high + range_margin * span
                    if low >= 0.0:  # a count, amount or age: a negative value is a sentinel, not drift
                        lo = max(lo, 0.0)
                    ready, g.range_seen = True, []
            if not out_of_range:  # Welford for the stat interval and the drift-score reference
                n += 1
                d = v - mean
                mean += d / n
                m2 += d * (v - mean)
                if rn < SCORE_REFERENCE:
                    rn += 1
                    d = v - rmean
                    rmean += d / rn
                    rm2 += d * (v - rmean)
                keep_signal(j)
        if n + missing >= stats_every:
            stats.append((E[j], StatPoint(P[j], first, n, mean, m2 / (n - 1) if n > 1 else 0.0, missing, rn, rmean,
                                          rm2 / (rn - 1) if rn > 1 else 0.0)))  # fmt: skip
            n, mean, m2, missing, first = 0, 0.0, 0.0, 0, None
    iv.n, iv.mean, iv.m2, iv.missing = n, mean, m2, missing
    ref.n, ref.mean, ref.m2 = rn, rmean, rm2
    g.interval_first, g.lo, g.hi, g.range_ready = first, lo, hi, ready
    signal = col.take(signal_keep)
    return [*_input(g, "missing", missing_flags, E, P), *_input(g, "range", *col.take(range_keep, range_flags)),
            *_input(g, "mean", *signal), *_input(g, "variance", *signal)]  # fmt: skip


def categorical_inputs(g: Group, col: Column) -> list[ChannelInput]:
    vals = col.values
    flags = [1.0 if v is None else 0.0 for v in vals]
    keep = [j for j, v in enumerate(vals) if v is not None]
    return [*_input(g, "missing", flags, col.events, col.positions), *_input(g, "category", *col.take(keep))]


def label_inputs(g: Group, col: Column) -> list[ChannelInput]:
    return _input(g, "label", [float(y) for y in col.values], col.events, col.positions)


def error_inputs(g: Group, labels: Column, predictions: list[float]) -> list[ChannelInput]:
    """Binary labels: 0/1 misclassification overall and within each class (a recall drop on
    3% positives barely moves the overall error, 1.3% -> 3%, but is 10% -> 70% among
    positives); other labels: the absolute error."""
    err: list[float] = []
    pos: list[int] = []
    neg: list[int] = []
    absolute: list[int] = []
    abs_err: list[float] = []
    for j, (y, p) in enumerate(zip(labels.values, predictions, strict=True)):
        if y in (0, 1) and 0.0 <= p <= 1.0:
            err.append(float((p >= 0.5) != (y == 1)))
            (pos if y == 1 else neg).append(j)
        else:
            absolute.append(j)
            abs_err.append(abs(p - float(y)))
    if absolute:
        skip = set(absolute)
        binary: list[int] | None = [j for j in range(len(predictions)) if j not in skip]
    else:
        binary = None
    col = labels if binary is None else Column(*labels.take(binary))
    out = _input(g, "error", err, col.events, col.positions)
    if binary is not None:  # positions within the binary events
        index = {j: i for i, j in enumerate(binary)}
        pos, neg = [index[j] for j in pos], [index[j] for j in neg]
    for name, keep in (("error_pos", pos), ("error_neg", neg)):
        out += _input(g, name, *col.take(keep, [err[j] for j in keep]))
    return out + _input(g, "abs_error", *labels.take(absolute, abs_err))
