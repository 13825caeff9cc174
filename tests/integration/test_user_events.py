"""A user's own JSON events on their own topic, mapped by the YAML model config: on a real broker."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Producer

from deploy.services import start_services
from runtime.kafka import committed_offsets, read_topic
from runtime.topics import ensure_topics
from schemas.codec import ALERT, DEAD_LETTER
from schemas.settings import Settings

REGIONS = ("eu", "us", "ap")
N, ONSET = 2000, 1000


def user_records():
    """Nested records of a shop's own format; eu's order amount shifts up at its event ONSET."""
    rng = np.random.default_rng(7)
    for i in range(N):
        for r in REGIONS:
            amount = float(rng.normal(50, 5)) + (15.0 if r == "eu" and i >= ONSET else 0.0)
            label = int(rng.random() < 0.3)
            yield r, {
                "order": {"id": f"{r}-{i}", "amount": amount},
                "ts": 1_790_000_000_000 + i * 1000 + REGIONS.index(r),
                "region": r,
                "client": {"device": str(rng.choice(["ios", "android", "web"]))},
                "p": float(rng.uniform(0.5, 1) if label else rng.uniform(0, 0.5)),
                "y": bool(label),
            }


def run_on_users_topic(kafka_settings: Settings, topic: str, route: str, tmp_path) -> tuple[Settings, list, list]:
    """The user's records (and one that does not fit) on ``topic``; one streams worker until it
    committed them all; then the alerts and dead letters."""
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
sources:
  - topic: {topic}
    event_id: order.id
    event_time: ts
    model: {{value: shop}}
    slice: region
    features: {{amount: order.amount}}
    categorical: {{device: client.device}}
    prediction: p
    label: y
    route: {route}
"""
    )
    tag = uuid.uuid4().hex[:6]
    settings = kafka_settings.model_copy(  # pipeline topics of its own: other tests' alerts stay out
        update={"topic_prefix": f"{kafka_settings.topic_prefix}-ue{tag}", "app_id": f"user-events-{tag}",
                "detection_config": config}
    )  # fmt: skip
    ensure_topics(settings)
    producer = Producer(settings.producer_config())
    n = 0
    for region, rec in user_records():
        producer.produce(topic, key=region.encode(), value=json.dumps(rec).encode())
        n += 1
    producer.produce(topic, key=b"us", value=b'{"order": {"id": "x", "amount": "lots"}, "ts": 1, "region": "us"}')
    assert producer.flush(30) == 0
    group = start_services(settings, ("streams",), log_dir=tmp_path / "logs")
    try:
        deadline = time.monotonic() + 120
        done = events_done = 0
        while time.monotonic() < deadline and (done < n + 1 or (route == "bridge" and events_done < n)):
            assert all(group.alive().values()), (tmp_path / "logs" / "streams.log").read_text()[-3000:]
            time.sleep(1)
            try:
                done = sum(max(o, 0) for o in committed_offsets(settings, settings.app_id, topic).values())
                events = committed_offsets(settings, settings.app_id, settings.topics.events)
                events_done = sum(max(o, 0) for o in events.values())
            except KafkaException as exc:  # a fresh broker may still be electing the group coordinator
                if exc.args[0].code() not in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
                    raise
        assert done == n + 1, f"the worker committed {done} of {n + 1} messages of the user's topic"
        if route == "bridge":
            assert events_done == n, f"{events_done} of {n} forwarded events monitored"
    finally:
        codes = group.stop()
    assert codes["streams"] == 0, codes
    alerts = read_topic(settings, settings.topics.alerts, decode=lambda m: ALERT.decode(m.value()), timeout=30)
    letters = read_topic(settings, settings.topics.dlq, decode=lambda m: DEAD_LETTER.decode(m.value()), timeout=30)
    return settings, alerts, letters


def check_alerts_and_letters(alerts: list, letters: list, topic: str, alert_topic: str) -> None:
    assert {(a["model"], a["slice"], a["feature"], a["alert_type"]) for a in alerts} == {
        ("shop", "eu", "amount", "DATA_DRIFT")
    }, [(a["slice"], a["feature"], a["detector"]) for a in alerts]
    first = min(alerts, key=lambda a: a["window_end_event_time"])
    assert first["topic"] == alert_topic
    assert 0 <= (first["window_end_event_time"] - 1_790_000_000_000) // 1000 - ONSET < 300
    assert len(letters) == 1
    dl = letters[0]
    assert dl["source_topic"] == topic and "feature 'amount' (order.amount) must be a number" in dl["reason"]


def test_users_topic_is_mapped_monitored_in_place_and_committed(kafka_settings: Settings, scratch_topic, tmp_path):
    topic = scratch_topic(3)  # as many partitions as the events topic, keyed by slice: route direct
    _settings, alerts, letters = run_on_users_topic(kafka_settings, topic, "direct", tmp_path)
    check_alerts_and_letters(alerts, letters, topic, alert_topic=topic)


def test_users_topic_with_another_partition_count_is_bridged(kafka_settings: Settings, scratch_topic, tmp_path):
    topic = scratch_topic(1)  # one partition, the events topic has three: the worker forwards by slice
    settings, alerts, letters = run_on_users_topic(kafka_settings, topic, "bridge", tmp_path)
    check_alerts_and_letters(alerts, letters, topic, alert_topic=settings.topics.events)
