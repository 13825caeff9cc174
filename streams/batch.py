"""One group's values of a batch through its channels, in event order, mostly in bulk.

Per event, a group's channels interact only through an alert (it starts a cooldown on the
group's channels of that alert type, clears their candidates and moves their epoch) and a
DriftStat (it reads their warm-up and cooldown state). A detector's own trajectory depends
only on its values and its channel's confirmations. So each channel without a candidate
runs ahead through all its values of the batch (:meth:`Channel.fast_forward`: one detector
call, buffers written in slices) until its detector fires, and only those *moments* (a
detection, each value while a candidate waits, a stat) are played in event order from a
heap. An alert's effect on a channel that ran ahead uses that channel's value count at the
alert's moment, which is what it was then. The result is the same as feeding every value
to every channel one event at a time (``tests/unit/test_batch_path.py`` checks it).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

from streams.channel import Channel
from streams.records import Finding, RawPosition, StatPoint
from streams.state import FEED_ORDER, Group

AFTER_CHANNELS = 9  # a stat's moment: after every channel of its event
DETECTED, STEP, STAT = 0, 1, 2


class ChannelInput:
    """A channel's values of one batch, with each value's event (batch index) and position."""

    __slots__ = ("channel", "cursor", "events", "order", "positions", "values")

    def __init__(self, channel: Channel, values: list[Any], events: list[int], positions: list[RawPosition]):
        self.channel, self.values, self.events, self.positions = channel, values, events, positions
        self.order = FEED_ORDER[channel.name]
        self.cursor = 0  # values of this batch fed so far

    def seen_at(self, event: int, order: int) -> int:
        """The channel's value count just before moment (event, order)."""
        j = bisect_left(self.events, event)
        if order > self.order and j < len(self.events) and self.events[j] == event:
            j += 1
        return self.channel.seen - (self.cursor - j)


AlertSink = Callable[[int, Channel, Finding, RawPosition], None]  # (event, channel, finding, position)
StatSink = Callable[[int, StatPoint, str, str], None]  # (event, point, detector key, state)


def run_group(g: Group, inputs: list[ChannelInput], stats: list[tuple[int, StatPoint]], confirm_events: int,
              cooldown_events: int, warmup_events: int, on_alert: AlertSink, on_stat: StatSink) -> None:
    """Feed ``inputs`` to ``g``'s channels and emit its alerts and ``stats`` in event order."""
    heap: list[tuple[int, int, int, int, Any]] = []
    by_channel = {id(ci.channel): ci for ci in inputs}
    tie = 0

    def push(event: int, order: int, kind: int, item: Any) -> None:
        nonlocal tie
        tie += 1
        heappush(heap, (event, order, kind, tie, item))

    def run_ahead(ci: ChannelInput) -> None:
        n = len(ci.values)
        if ci.cursor >= n:
            return
        k = ci.channel.fast_forward(ci.values, ci.positions, ci.cursor)
        ci.cursor = min(k + 1, n)
        if k < n:
            push(ci.events[k], ci.order, DETECTED, ci)

    def seen_at(ch: Channel, event: int, order: int) -> int:
        ci = by_channel.get(id(ch))
        return ch.seen if ci is None else ci.seen_at(event, order)

    def cooldown(ch: Channel, event: int, order: int) -> None:
        """As the per-event path: the group's channels of the alert's type are quiet for a
        cooldown in events of the group (a channel that sees 3% of them, for 3% of it)."""
        counts = {id(c): (c.seen if c is ch else seen_at(c, event, order)) for c in g.channels.values()}
        events = max(counts.values()) or 1
        for other in g.channels.values():
            if other.alert_type == ch.alert_type:
                seen = counts[id(other)]
                other.quiet_until = seen + math.ceil(cooldown_events * seen / events)
                other.pending = None
                other.epoch = seen

    for ci in inputs:
        if ci.channel.pending is None:
            run_ahead(ci)
        elif ci.values:
            push(ci.events[0], ci.order, STEP, ci)
    for event, point in stats:
        push(event, AFTER_CHANNELS, STAT, point)

    while heap:
        event, order, kind, _, item = heappop(heap)
        if kind == STAT:
            seen = {id(c): seen_at(c, event, order) for c in g.channels.values()}
            mean = g.channels.get("mean")
            count = seen[id(mean)] if mean is not None else item.n
            in_cooldown = any(warmup_events < seen[id(c)] <= c.quiet_until for c in g.channels.values())
            state = "warmup" if count <= warmup_events else ("drift" if in_cooldown else "stable")
            on_stat(event, item, mean.detector.key if mean is not None else "", state)
            continue
        ci, ch = item, item.channel
        if kind == DETECTED:
            k = ci.cursor - 1
            finding = ch.detected(ci.positions[k], confirm_events)
        else:
            k = ci.cursor
            finding = ch.feed(ci.values[k], ci.positions[k], confirm_events)
            ci.cursor = k + 1
        if finding is not None:
            cooldown(ch, event, order)
            on_alert(event, ch, finding, ci.positions[k])
        if ch.pending is None:
            run_ahead(ci)
        elif ci.cursor < len(ci.values):
            push(ci.events[ci.cursor], ci.order, STEP, ci)
