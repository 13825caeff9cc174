"""The local KRaft broker, the pipeline topics, and both Kafka clients we use against it.

confluent-kafka (librdkafka) serves producers, consumers and admin; faust runs on aiokafka,
whose older request versions are why the broker is Kafka 3.9 (4.0 dropped them).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from runtime.topics import ensure_topics, partition_counts
from schemas.settings import Settings

pytestmark = pytest.mark.integration


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka's spelling of the connection settings (what faust gets as broker credentials)."""
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        kw["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if "SSL" in settings.kafka_security_protocol:
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=settings.kafka_ssl_key_password.get_secret_value()
            if settings.kafka_ssl_key_password
            else None,
        )
    return kw


def consume_all(
    settings: Settings, topic: str, group: str, expected: int, partitions: int = 3, timeout: float = 30.0
) -> list[Any]:
    consumer = Consumer(
        settings.confluent_config(
            **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    assert len(got) == expected, f"consumed {len(got)} of {expected} within {timeout}s"
    assert sum(max(tp.offset, 0) for tp in committed) == expected
    return got


# ---------------------------------------------------------------------------- broker and topics
def test_broker_answers(kafka_settings: Settings) -> None:
    md = AdminClient(kafka_settings.confluent_config()).list_topics(timeout=10)
    assert md.brokers


def test_local_broker_status_and_idempotent_up(local_broker: Any, kafka_settings: Settings) -> None:
    if local_broker is None:
        pytest.skip("DRIFT_KAFKA_BOOTSTRAP names an external broker")
    before = local_broker.status()
    assert before["running"] and before["ready"] and before["pid"]
    assert before["bootstrap"] == kafka_settings.kafka_bootstrap
    assert set(kafka_settings.topics.all()) <= set(before["topics"])
    started = time.monotonic()
    after = local_broker.up()  # already running: a no-op
    assert after["pid"] == before["pid"]
    assert time.monotonic() - started < 5


def test_topics_exist_with_configured_partitions(kafka_settings: Settings) -> None:
    s, t = kafka_settings, kafka_settings.topics
    counts = partition_counts(s)
    assert counts[t.events] == s.events_partitions
    assert counts[t.alerts] == s.alerts_partitions
    for name in (t.dlq, t.stats, t.retrain_requests, t.retrain_results):
        assert counts[name] == s.other_partitions, name
    admin = AdminClient(s.confluent_config())
    res = ConfigResource(ConfigResource.Type.TOPIC, t.events)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    assert configs["retention.ms"].value == str(s.retention_ms)


def test_ensure_topics_is_idempotent(kafka_settings: Settings) -> None:
    assert ensure_topics(kafka_settings) == []


# ---------------------------------------------------------------------------- round trips
def test_confluent_round_trip_idempotent_acks_all(
    kafka_settings: Settings, scratch_topic: Any, fresh_group: str
) -> None:
    topic = scratch_topic(3)
    conf = kafka_settings.producer_config()
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    producer = Producer(conf)
    errors, delivered = [], []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        (errors if err else delivered).append(err or msg)

    n = 300
    for i in range(n):
        producer.produce(topic, key=f"slice-{i % 7}".encode(), value=str(i).encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors and len(delivered) == n

    got = consume_all(kafka_settings, topic, fresh_group, n)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for msg in got:
        by_key[msg.key()].append(int(msg.value()))
        partitions[msg.key()].add(msg.partition())
    assert sorted(v for vs in by_key.values() for v in vs) == list(range(n))
    for key, values in by_key.items():
        assert values == sorted(values), f"order broken for {key!r}"
        assert len(partitions[key]) == 1, f"{key!r} spread over partitions"


def test_aiokafka_round_trip(kafka_settings: Settings, scratch_topic: Any, fresh_group: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AioTP

    topic = scratch_topic(3)
    n = 100
    kw = aiokafka_kwargs(kafka_settings)

    async def run() -> list[Any]:
        producer = AIOKafkaProducer(**kw, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            futs = [
                await producer.send(topic, key=f"k{i % 5}".encode(), value=str(i).encode()) for i in range(n)
            ]
            await asyncio.gather(*futs)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, **kw, group_id=fresh_group, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        got: list[Any] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(batch)
            await consumer.commit()
            committed = [await consumer.committed(AioTP(topic, p)) or 0 for p in range(3)]
        finally:
            await consumer.stop()
        assert sum(committed) == n
        return got

    got = asyncio.run(run())
    assert sorted(int(m.value) for m in got) == list(range(n))


def test_cross_client_confluent_lz4_to_aiokafka(
    kafka_settings: Settings, scratch_topic: Any, fresh_group: str
) -> None:
    """What the pipeline does: `driftctl produce` (confluent, producer_config: lz4) -> faust (aiokafka).

    aiokafka decodes lz4 only with cramjam installed (aiokafka[lz4]).
    """
    from aiokafka import AIOKafkaConsumer

    topic = scratch_topic(3)
    n = 50
    producer = Producer(kafka_settings.producer_config())
    for i in range(n):
        producer.produce(topic, key=b"s", value=(b"x" * 100) + str(i).encode())
    assert producer.flush(30) == 0

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(
            topic, **aiokafka_kwargs(kafka_settings), group_id=fresh_group, auto_offset_reset="earliest"
        )
        await consumer.start()
        got: list[Any] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(batch)
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert [m.value[100:] for m in got] == [str(i).encode() for i in range(n)]
