"""Decoded alerts from ``drift.alerts``, one JSON object per line."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from schemas.codec import ALERT
from schemas.errors import InfraError, SchemaError
from schemas.settings import Settings


def tail_alerts(
    settings: Settings,
    on_alert: Callable[[dict[str, Any]], None],
    from_beginning: bool = False,
    follow: bool = False,
    idle_timeout: float = 10.0,
    on_error: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Read alerts until ``idle_timeout`` seconds pass with none (or forever with ``follow``).

    Reads all partitions by assignment (no group membership, nothing committed), so
    any number of tails can run side by side without moving anyone's offsets.
    """
    topic = settings.topics.alerts
    consumer = Consumer(
        settings.confluent_config(
            **{"group.id": f"driftctl-alerts-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
    )
    count = 0
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if meta.topics[topic].error is not None:
            raise InfraError(f"topic {topic}: {meta.topics[topic].error}; run driftctl up")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in meta.topics[topic].partitions])
        last_seen = time.monotonic()
        while follow or time.monotonic() - last_seen < idle_timeout:
            if stop and stop():
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF and on_error:
                    on_error(str(msg.error()))
                continue
            last_seen = time.monotonic()
            try:
                alert = ALERT.decode(msg.value())
            except SchemaError as exc:
                if on_error:
                    on_error(f"{topic}[{msg.partition()}]@{msg.offset()}: {exc}")
                continue
            count += 1
            on_alert(alert)
    finally:
        consumer.close()
    return count


def print_json(out: TextIO) -> Callable[[dict[str, Any]], None]:
    def emit(alert: dict[str, Any]) -> None:
        out.write(json.dumps(alert, separators=(",", ":")) + "\n")
        out.flush()

    return emit
