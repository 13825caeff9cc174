"""The sink's batch: rows and next offsets per partition since the last flush, and recent ids.

Kept apart from the service loop (:mod:`consumers.sink`) because it is pure bookkeeping: what
to insert, which offsets that insert lets the sink commit, and which alert ids were already
stored (so an exact replay within one process is skipped before it reaches ClickHouse).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from consumers.rows import Row

TP = tuple[str, int]

RECENT_ALERT_IDS = 100_000


class RecentIds:
    """A bounded set remembering the most recently added ids."""

    def __init__(self, maxlen: int = RECENT_ALERT_IDS):
        self.maxlen = maxlen
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: str) -> None:
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)


@dataclass
class Entry:
    table: str
    row: Row
    replay_key: str | None = None


class Batch:
    """Rows and next offsets per (topic, partition), since the last successful flush."""

    def __init__(self) -> None:
        self.entries: dict[TP, list[Entry]] = {}
        self.next_offsets: dict[TP, int] = {}
        self.counts: dict[TP, int] = {}  # consumed messages, skipped replays included
        self.replay_keys: set[str] = set()
        self.started: float | None = None

    def __len__(self) -> int:
        return sum(self.counts.values())

    def add(self, tp: TP, offset: int, entry: Entry | None) -> None:
        """Record a consumed message; entry None means nothing to insert (a skipped replay)."""
        if self.started is None:
            self.started = time.monotonic()
        if entry is not None:
            self.entries.setdefault(tp, []).append(entry)
            if entry.replay_key:
                self.replay_keys.add(entry.replay_key)
        self.next_offsets[tp] = offset + 1
        self.counts[tp] = self.counts.get(tp, 0) + 1

    def by_table(self) -> dict[str, list[Row]]:
        tables: dict[str, list[Row]] = {}
        for entries in self.entries.values():
            for e in entries:
                tables.setdefault(e.table, []).append(e.row)
        return tables

    def offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in sorted(self.next_offsets.items())]

    def drop(self, tps: set[TP]) -> None:
        """Forget partitions this consumer no longer owns; their new owner re-reads them."""
        for tp in tps:
            self.entries.pop(tp, None)
            self.next_offsets.pop(tp, None)
            self.counts.pop(tp, None)
        if not self.counts:
            self.clear()
            return
        self.replay_keys = {e.replay_key for es in self.entries.values() for e in es if e.replay_key}

    def clear(self) -> None:
        self.__init__()
