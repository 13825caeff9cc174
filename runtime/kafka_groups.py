"""What consumer groups have committed, watched from outside the group (OffsetFetch and
DescribeGroups, no membership): the benchmarks' commit samples, the readers' "is the worker
still catching up" check, and a stable group's assignment."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from confluent_kafka import KafkaException, TopicPartition

from runtime.kafka import committed_offsets, end_offsets, probe_consumer
from schemas.settings import Settings


class Sample(NamedTuple):
    seconds: float  # since the watch started (or since ``start``)
    committed: int  # events of the topic covered by the group's committed offsets


def watch_commits(
    settings: Settings,
    group: str,
    topic: str,
    total: int,
    alive: Callable[[], bool],
    *,
    start: float | None = None,
    poll: float = 0.5,
    stall: float = 180.0,
    timeout: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[Sample]:
    """(time, committed) samples until ``group`` committed ``total`` events of ``topic``, the
    worker died (``alive()`` false), ``timeout`` passed, or nothing moved for ``stall`` s.

    One long-lived client asks for the group's committed offsets (OffsetFetch, no group
    membership): a new client per look would cost the watched worker CPU.
    """
    start = time.monotonic() if start is None else start
    probe = probe_consumer(settings, group)
    samples: list[Sample] = []
    best, progress_at = 0, time.monotonic()
    try:
        parts = [TopicPartition(topic, p) for p in probe.list_topics(topic, timeout=10).topics[topic].partitions]
        while alive():
            try:
                n = sum(max(tp.offset, 0) for tp in probe.committed(parts, timeout=10))
            except KafkaException:  # the group coordinator is not ready yet
                n = best
            now = time.monotonic()
            samples.append(Sample(now - start, n))
            if n > best:
                best, progress_at = n, now
                if on_progress:
                    on_progress(n)
            if n >= total or now - progress_at > stall or (timeout is not None and now - start > timeout):
                break
            time.sleep(poll)
    finally:
        probe.close()
    return samples


def group_is_catching_up(
    settings: Settings, group: str, topic: str, stall_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], bool]:
    """A ``busy`` check for :func:`runtime.kafka.iter_topic`: ``group`` has not yet committed ``topic`` up to
    its end as of the first check, and its commits moved within ``stall_seconds`` (default:
    twice the worker's checkpoint interval, plus 5 s). The target is fixed at the first check,
    so a live producer cannot keep a reader waiting forever; a group that stopped, or never
    ran, is not busy."""
    stall = 2 * settings.snapshot_every_seconds + 5 if stall_seconds is None else stall_seconds
    state: dict[str, Any] = {"target": None, "committed": None, "moved_at": 0.0}

    def busy() -> bool:
        try:
            if state["target"] is None:
                state["target"] = end_offsets(settings, topic, timeout=10)
            done = committed_offsets(settings, group, topic)
        except KafkaException:
            return False
        target: dict[int, int] = state["target"]
        now = clock()
        committed = {p: max(done.get(p, 0), 0) for p in target}
        if committed != state["committed"]:
            state["committed"], state["moved_at"] = committed, now
        behind = any(committed[p] < end for p, end in target.items())
        return behind and now - state["moved_at"] < stall

    return busy


def group_assignment(admin: Any, group: str, timeout: float = 10.0) -> dict[str, list[tuple[str, int]]] | None:
    """{member's client id: [(topic, partition), ...]} of a *stable* consumer group, else None
    (rebalancing, empty, or unknown). ``admin`` is an ``AdminClient``; one try, no retries."""
    description = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
    if description.state.name != "STABLE":
        return None
    return {
        m.client_id: sorted((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment else []))
        for m in description.members
    }
