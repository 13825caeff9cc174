"""The compacted changelog of detector snapshots: its topic, keys, the in-memory table of
the owned partitions' latest snapshots, and reading it back on assignment."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from runtime.kafka import usable, watermarks
from schemas.settings import Settings

log = logging.getLogger(__name__)

STATE_TABLE = "detector-state"


def state_topic(settings: Settings) -> str:
    """The changelog topic: the name faust gave this table, so its snapshots stay readable."""
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


def state_key(model: str, slice_: str) -> str:
    return f"{model}\x1f{slice_}"


class SnapshotTable:
    """The latest snapshot of each slice of the owned partitions: the changelog, in memory."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._partition: dict[str, int] = {}

    def put(self, partition: int, key: str, blob: bytes | None) -> None:
        if blob is None:  # tombstone
            self._blobs.pop(key, None)
            self._partition.pop(key, None)
        else:
            self._blobs[key], self._partition[key] = blob, partition

    def get(self, key: str) -> bytes | None:
        return self._blobs.get(key)

    def drop(self, partitions: set[int]) -> None:
        for key in [k for k, p in self._partition.items() if p in partitions]:
            self.put(0, key, None)

    def __len__(self) -> int:
        return len(self._blobs)


def read_changelog(
    settings: Settings, topic: str, partitions: set[int], timeout: float = 120.0
) -> Iterable[tuple[int, bytes, bytes | None]]:
    """(partition, key, value) of ``partitions`` from the beginning to the current end."""
    c = Consumer(
        settings.confluent_config(
            **{
                "group.id": f"{settings.app_id}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
    )
    try:
        ends = {p: high for p, (low, high) in watermarks(c, topic, partitions).items() if high > low}
        if not ends:
            return
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise KafkaException(f"restoring {topic} {sorted(ends)} took over {timeout:.0f}s")
            for m in c.consume(1000, 0.5):
                if not usable(m, log, "changelog read"):
                    continue
                p = m.partition()
                yield p, m.key(), m.value()
                if p in ends and m.offset() >= ends[p] - 1:
                    del ends[p]
    finally:
        c.close()
