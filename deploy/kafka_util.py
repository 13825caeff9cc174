"""Small read-only Kafka helpers shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.settings import Settings


def _probe(settings: Settings, group: str | None = None) -> Consumer:
    return Consumer(
        settings.confluent_config(**{"group.id": group or f"probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    )


def end_offsets(settings: Settings, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """High watermarks per partition; waits out leader elections of freshly created topics."""
    c = _probe(settings)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                parts = c.list_topics(topic, timeout=10).topics[topic].partitions
                return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
            except KafkaException as exc:
                if not exc.args[0].retriable() and "leader" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    c = _probe(settings, group)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def wait_caught_up(settings: Settings, group: str, topic: str, timeout: float = 60.0) -> bool:
    """True once ``group`` has committed everything currently in ``topic``."""
    target = end_offsets(settings, topic)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = committed_offsets(settings, group, topic)
        if all(end == 0 or done.get(p, -1) >= end for p, end in target.items()):
            return True
        time.sleep(0.5)
    return False


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
    probe = _probe(settings, group)
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
