"""``driftctl alerts``: decoded alerts from the start or the end, a bad record reported and skipped."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Producer

from consumers.alert_tail import tail_alerts
from runtime.kafka import read_topic
from runtime.topics import ensure_topics
from schemas.codec import ALERT
from schemas.settings import Settings


def alert(i: int) -> dict:
    return {
        "schema_version": ALERT.version, "alert_id": f"a{i}", "alert_type": "DATA_DRIFT", "severity": "LOW",
        "model": "m", "slice": f"s{i}", "feature": "x", "detector": "adwin", "detector_params": {},
        "statistic": 1.0, "threshold": 0.5, "confidence": 0.9,
        "reference": {"count": 1, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0},
        "current": {"count": 1, "mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0},
        "topic": "t", "partition": 0, "first_offset": 0, "last_offset": 1, "window_start_event_time": 1,
        "window_end_event_time": 2, "worker_id": "w", "app_version": "0", "detected_at": 3,
    }  # fmt: skip


def test_tail_from_the_beginning_and_from_the_end(kafka_settings: Settings):
    settings = kafka_settings.model_copy(update={"topic_prefix": f"{kafka_settings.topic_prefix}-tail{uuid.uuid4().hex[:6]}"})
    ensure_topics(settings)
    p = Producer(settings.producer_config())
    for i in range(3):
        p.produce(settings.topics.alerts, key=f"s{i}".encode(), value=ALERT.encode(alert(i)))
    p.produce(settings.topics.alerts, key=b"s0", value=b"not an alert")
    assert p.flush(30) == 0

    got, errors = [], []
    t0 = time.monotonic()
    n = tail_alerts(settings, got.append, from_beginning=True, idle_timeout=3, on_error=errors.append)
    assert n == 3 and sorted(a["alert_id"] for a in got) == ["a0", "a1", "a2"]
    assert len(errors) == 1 and "not Avro single-object encoding" in errors[0]
    assert time.monotonic() - t0 < 30  # the idle timeout ends it

    assert tail_alerts(settings, got.append, from_beginning=False, idle_timeout=2) == 0  # only new alerts
    assert len(read_topic(settings, settings.topics.alerts, timeout=30)) == 4  # raw messages, read to the end
    assert tail_alerts(settings, got.append, from_beginning=True, follow=True, stop=lambda: len(got) >= 4) >= 1


def test_the_idle_clock_waits_while_the_streams_worker_catches_up(kafka_settings: Settings, fresh_group: str):
    """Events the worker has not committed yet: the tail keeps waiting while the group moves,
    and ends once it stalls; events produced after the first check do not hold it."""
    from confluent_kafka import Consumer, TopicPartition

    from runtime.kafka import iter_topic
    from runtime.kafka_groups import group_is_catching_up

    settings = kafka_settings.model_copy(update={"topic_prefix": f"{kafka_settings.topic_prefix}-lag{uuid.uuid4().hex[:6]}"})
    ensure_topics(settings)
    p = Producer(settings.producer_config())
    for _ in range(10):
        p.produce(settings.topics.events, key=b"s", value=b"{}", partition=0)
    assert p.flush(30) == 0
    group = Consumer(settings.confluent_config(**{"group.id": fresh_group, "enable.auto.commit": False}))
    now = [0.0]
    busy = group_is_catching_up(settings, fresh_group, settings.topics.events, stall_seconds=5, clock=lambda: now[0])
    calls = []

    def moving_worker() -> bool:  # the worker commits 1, 2, 3 events, then stalls; 1 s per check
        if len(calls) < 3:
            group.commit(offsets=[TopicPartition(settings.topics.events, 0, len(calls) + 1)], asynchronous=False)
        if len(calls) == 1:  # a live producer: more events after the first check
            p.produce(settings.topics.events, key=b"s", value=b"{}", partition=0)
            assert p.flush(30) == 0
        now[0] += 1.0
        calls.append(busy())
        return calls[-1]

    assert list(iter_topic(settings, settings.topics.alerts, start="end", idle=0.2, busy=moving_worker)) == []
    assert calls == [True] * 7 + [False]  # stalled at 3 s, not busy from 3 + 5 s on

    group.commit(offsets=[TopicPartition(settings.topics.events, 0, 10)], asynchronous=False)
    assert busy() is False, "caught up with the end as of the first check: done, whatever came after"
    group.close()
