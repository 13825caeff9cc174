"""The compacted changelog of detector snapshots: its topic, keys, the in-memory table of
the owned partitions' latest snapshots, and reading it back on assignment."""

from __future__ import annotations

from collections.abc import Iterable

from runtime.kafka import read_ranges
from schemas.settings import Settings

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
    """(partition, key, value) of ``partitions`` from the beginning to the current end
    (:class:`runtime.kafka.RangeReadTimeout`, a KafkaException, if that takes over ``timeout`` s)."""
    for m in read_ranges(settings, topic, partitions, timeout=timeout, group=f"{settings.app_id}-restore",
                         what=f"changelog read of {topic}"):  # fmt: skip
        yield m.partition(), m.key(), m.value()
