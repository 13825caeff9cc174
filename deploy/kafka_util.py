"""Small read-only Kafka helpers shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

import time
import uuid

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
