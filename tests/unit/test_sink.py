"""The sink's batching and commit-after-insert logic, with a fake consumer and real chdb."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumers import sink as sink_mod
from consumers.rows import TABLES
from consumers.sink import ClickHouseSink
from consumers.sink_batch import Batch, RecentIds
from consumers.store import query
from schemas.codec import ALERT, DEAD_LETTER, STAT
from schemas.settings import load_settings
from tests.fakes import T0, FakeConsumer, FakeMessage

# --- a flaky store -------------------------------------------------------------------------


class FlakyClient:
    """Delegates to a real client; inserts fail while ``down`` is set."""

    def __init__(self, client):
        self.client, self.down, self.inserts = client, False, 0

    def command(self, statement):
        return self.client.command(statement)

    def insert(self, table, rows, column_names):
        self.inserts += 1
        if self.down:
            raise ConnectionError("ClickHouse is down")
        return self.client.insert(table, rows, column_names=column_names)


# --- records ---------------------------------------------------------------------------------


def alert_bytes(alert_id="alert-1", detected_at=T0 + 1000):
    return ALERT.encode({
        "alert_id": alert_id, "alert_type": "DATA_DRIFT", "severity": "HIGH", "model": "m", "slice": "eu",
        "feature": "x", "detector": "adwin", "detector_params": {}, "statistic": 1.0, "threshold": 0.5,
        "confidence": 0.9, "reference": {"count": 1, "mean": 0.0, "std": 1.0, "min": 0.0, "max": 0.0},
        "current": {"count": 1, "mean": 1.0, "std": 1.0, "min": 1.0, "max": 1.0}, "topic": "drift.events",
        "partition": 0, "first_offset": 0, "last_offset": 9, "window_start_event_time": T0,
        "window_end_event_time": T0 + 10, "worker_id": "w", "app_version": "0", "detected_at": detected_at,
    })  # fmt: skip


def stat_bytes(stat_id="s1"):
    return STAT.encode({
        "stat_id": stat_id, "model": "m", "slice": "eu", "feature": "x", "detector": "adwin", "count": 10,
        "mean": 0.0, "std": 1.0, "missing_rate": 0.0, "drift_score": 0.1, "detector_state": "stable",
        "topic": "drift.events", "partition": 0, "first_offset": 0, "last_offset": 9,
        "window_start_event_time": T0, "window_end_event_time": T0 + 10, "worker_id": "w", "emitted_at": T0,
    })  # fmt: skip


def dead_letter_bytes(offset=5):
    return DEAD_LETTER.encode({
        "original_key": b"eu", "original_value": b'{"event_id": 1}', "reason": "event_id: expected a string",
        "error_type": "SchemaError", "source_topic": "drift.events", "source_partition": 1,
        "source_offset": offset, "source_timestamp": None, "worker_id": "streams-1", "failed_at": T0,
    })  # fmt: skip


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def store(ch):
    for table in TABLES:
        ch.command(f"TRUNCATE TABLE {table}")
    return ch


@pytest.fixture
def settings(tmp_path):
    return load_settings(run_dir=tmp_path, sink_batch_size=3, sink_flush_seconds=60, worker_id="sink-test")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(sink_mod, "BACKOFF_START", 0.01)
    monkeypatch.setattr(sink_mod, "BACKOFF_MAX", 0.02)


def count(client, table, final=True):
    return query(client, f"SELECT count() FROM {table}{' FINAL' if final else ''}")[1][0][0]


def steps(sink, n):
    for _ in range(n):
        sink.step()


# --- tests -----------------------------------------------------------------------------------


def test_subscribes_to_the_sink_topics_with_manual_commits(settings, store):
    consumer = FakeConsumer()
    sink = ClickHouseSink(settings, client=store, consumer=consumer)
    sink.step()
    t = settings.topics
    assert sorted(consumer.topics) == sorted([t.alerts, t.stats, t.dlq, t.retrain_requests, t.retrain_results, t.models])
    conf = sink.consumer_config()
    assert conf["enable.auto.commit"] is False and conf["group.id"] == settings.sink_group


def test_run_until_idle_waits_for_the_assignment(settings, store):
    class SlowJoin(FakeConsumer):
        polls = 0

        def poll(self, timeout=None):
            self.polls += 1
            if self.polls < 20:  # still joining the group
                time.sleep(0.01)
                return None
            return super().poll(timeout)

    consumer = SlowJoin([FakeMessage(settings.topics.stats, 0, 0, stat_bytes())])
    ClickHouseSink(settings, client=store, consumer=consumer).run_until_idle(0.01)
    assert consumer.commits == [[(settings.topics.stats, 0, 1)]]
    never = SlowJoin()
    never.polls = -10**9
    stats = ClickHouseSink(settings, client=store, consumer=never).run_until_idle(0.01, assign_timeout=0.1)
    assert stats.consumed == 0 and never.commits == []


def test_batches_until_size_then_inserts_then_commits(settings, store):
    t = settings.topics
    seen_at_commit = []
    consumer = FakeConsumer(
        [FakeMessage(t.stats, 0, 10, stat_bytes("s1")), FakeMessage(t.alerts, 1, 4, alert_bytes("a1")),
         FakeMessage(t.stats, 0, 11, stat_bytes("s2")), FakeMessage(t.stats, 0, 12, stat_bytes("s3"))],
        on_commit=lambda offsets: seen_at_commit.append((count(store, "drift_stats"), count(store, "drift_alerts"))),
    )  # fmt: skip
    sink = ClickHouseSink(settings, client=store, consumer=consumer)
    steps(sink, 2)
    assert consumer.commits == [] and count(store, "drift_stats") == 0  # below batch size, not due
    steps(sink, 2)  # third message polled, then the batch is due
    assert consumer.commits == [[(t.alerts, 1, 5), (t.stats, 0, 12)]]
    assert seen_at_commit == [(2, 1)]  # rows were stored before the commit
    assert sink.stats.inserted == {"drift_stats": 2, "drift_alerts": 1}
    sink.drain()
    assert consumer.commits[-1] == [(t.stats, 0, 13)] and count(store, "drift_stats") == 3


def test_flushes_after_flush_seconds(settings, store):
    settings = settings.model_copy(update={"sink_flush_seconds": 0.05})
    consumer = FakeConsumer([FakeMessage(settings.topics.stats, 0, 0, stat_bytes())])
    sink = ClickHouseSink(settings, client=store, consumer=consumer)
    sink.step()
    assert consumer.commits == []
    deadline = time.monotonic() + 5
    while not consumer.commits and time.monotonic() < deadline:
        sink.step()
    assert consumer.commits == [[(settings.topics.stats, 0, 1)]] and count(store, "drift_stats") == 1


def test_failed_insert_commits_nothing_keeps_the_batch_and_retries(settings, store):
    t = settings.topics
    flaky = FlakyClient(store)
    flaky.down = True
    msgs = [FakeMessage(t.alerts, 0, i, alert_bytes(f"a{i}")) for i in range(3)]
    consumer = FakeConsumer(msgs + [FakeMessage(t.alerts, 0, 3, alert_bytes("a3"))])
    sink = ClickHouseSink(settings, client=flaky, consumer=consumer)
    steps(sink, 4)  # 3 polls, then the failed flush
    assert consumer.commits == [] and len(sink.batch) == 3 and sink.stats.insert_failures == 1
    assert consumer.paused == {(t.alerts, 0)}  # no more data while the store is down
    time.sleep(0.05)
    steps(sink, 3)
    assert consumer.commits == [] and sink.stats.insert_failures >= 2 and len(consumer.queue) == 1
    flaky.down = False
    deadline = time.monotonic() + 5
    while not consumer.commits and time.monotonic() < deadline:
        sink.step()
    assert consumer.commits == [[(t.alerts, 0, 3)]] and count(store, "drift_alerts") == 3
    assert consumer.paused == set() and sink._retry_at is None


def test_drain_gives_up_without_committing_when_the_store_stays_down(settings, store):
    flaky = FlakyClient(store)
    flaky.down = True
    consumer = FakeConsumer([FakeMessage(settings.topics.stats, 0, 0, stat_bytes())])
    sink = ClickHouseSink(settings, client=flaky, consumer=consumer)
    sink.step()
    assert sink.drain(timeout=0.05) is False
    assert consumer.commits == [] and len(sink.batch) == 1


def test_duplicate_alerts_give_one_row(settings, store):
    t = settings.topics
    replayed = [FakeMessage(t.alerts, 0, i, alert_bytes("same", detected_at=T0 + i)) for i in range(4)]
    consumer = FakeConsumer(replayed)
    sink = ClickHouseSink(settings, client=store, consumer=consumer)
    steps(sink, 6)
    sink.drain()
    assert consumer.commits[-1] == [(t.alerts, 0, 4)]  # every offset is committed
    assert count(store, "drift_alerts", final=False) == 1 and sink.stats.replays_skipped == 3
    # a fresh process (empty recent-id set) replays it again: the table collapses it
    again = FakeConsumer([FakeMessage(t.alerts, 0, 0, alert_bytes("same", detected_at=T0 + 99))])
    ClickHouseSink(settings, client=store, consumer=again).run_until_idle(0.05)
    assert count(store, "drift_alerts") == 1
    assert query(store, "SELECT uniqExact(alert_id) FROM drift_alerts")[1] == [(1,)]


def test_corrupt_message_lands_in_dead_letters_and_the_sink_moves_on(settings, store):
    t = settings.topics
    garbage = b"\xc3\x01" + b"\x00" * 8 + b"\xff\xfe"
    consumer = FakeConsumer([
        FakeMessage(t.alerts, 2, 7, garbage, key=b"k"),
        FakeMessage(t.alerts, 2, 8, None),  # a tombstone
        FakeMessage(t.alerts, 2, 9, alert_bytes("ok")),
    ])  # fmt: skip
    sink = ClickHouseSink(settings, client=store, consumer=consumer)
    sink.run_until_idle(0.05)
    assert consumer.commits[-1] == [(t.alerts, 2, 10)] and count(store, "drift_alerts") == 1
    _, got = query(store, "SELECT source_topic, source_partition, source_offset, error_type, reason, original_key_b64,"
                          " original_value_b64, worker_id FROM dead_letters FINAL ORDER BY source_offset")  # fmt: skip
    assert [r[:4] for r in got] == [(t.alerts, 2, 7, "SchemaError"), (t.alerts, 2, 8, "SchemaError")]
    assert "unknown schema fingerprint" in got[0][4] and "not Avro" in got[1][4]
    assert base64.b64decode(got[0][5]) == b"k" and base64.b64decode(got[0][6]) == garbage
    assert got[1][6] is None and got[0][7] == "sink-test"
    assert sink.stats.dead_lettered == 2


def test_dead_letter_records_from_the_dlq_topic_are_stored(settings, store):
    t = settings.topics
    consumer = FakeConsumer([FakeMessage(t.dlq, 0, 0, dead_letter_bytes(5)), FakeMessage(t.dlq, 0, 1, dead_letter_bytes(5))])
    ClickHouseSink(settings, client=store, consumer=consumer).run_until_idle(0.05)
    _, got = query(store, "SELECT source_topic, source_partition, source_offset, worker_id, value_preview "
                          "FROM dead_letters FINAL")  # fmt: skip
    assert got == [("drift.events", 1, 5, "streams-1", '{"event_id": 1}')]


def test_run_until_stopped_then_drains_and_closes(settings, store):
    t = settings.topics
    consumer = FakeConsumer([FakeMessage(t.stats, 0, i, stat_bytes(f"s{i}")) for i in range(5)])
    sink = ClickHouseSink(settings, client=store, consumer=consumer)
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, args=(stop,))
    worker.start()
    deadline = time.monotonic() + 5
    while consumer.queue and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    worker.join(5)
    assert not worker.is_alive() and consumer.closed
    assert consumer.commits[-1] == [(t.stats, 0, 5)] and count(store, "drift_stats") == 5


def test_revoke_commits_pending_rows_or_forgets_revoked_partitions(settings, store):
    t = settings.topics
    flaky = FlakyClient(store)
    consumer = FakeConsumer([FakeMessage(t.stats, 0, 0, stat_bytes("s0")), FakeMessage(t.stats, 1, 0, stat_bytes("s1"))])
    sink = ClickHouseSink(settings, client=flaky, consumer=consumer)
    steps(sink, 2)
    sink._on_revoke(consumer, [TopicPartition(t.stats, 0)])
    assert consumer.commits == [[(t.stats, 0, 1), (t.stats, 1, 1)]] and not sink.batch
    consumer.feed(FakeMessage(t.stats, 0, 1, stat_bytes("s2")), FakeMessage(t.stats, 1, 1, stat_bytes("s3")))
    steps(sink, 2)
    flaky.down = True
    sink._on_revoke(consumer, [TopicPartition(t.stats, 0)])
    assert list(sink.batch.next_offsets) == [(t.stats, 1)] and len(sink.batch) == 1


def test_fatal_consumer_error_raises(settings, store):
    class Fatal:
        def fatal(self):
            return True

        def code(self):
            return KafkaError._FATAL

    consumer = FakeConsumer([FakeMessage(settings.topics.stats, 0, 0, None, error=Fatal())])
    sink = ClickHouseSink(settings, client=store, consumer=consumer)
    with pytest.raises(KafkaException):
        sink.step()


def test_recent_ids_are_bounded():
    recent = RecentIds(maxlen=3)
    for key in "abcd":
        recent.add(key)
    assert len(recent) == 3 and "a" not in recent and "d" in recent
    recent.add("b")
    recent.add("e")
    assert "b" in recent and "c" not in recent


def test_batch_offsets_are_next_to_read():
    batch = Batch()
    batch.add(("t", 1), 41, None)
    batch.add(("t", 0), 9, None)
    batch.add(("t", 1), 42, None)
    assert [(tp.topic, tp.partition, tp.offset) for tp in batch.offsets()] == [("t", 0, 10), ("t", 1, 43)]
    assert len(batch) == 3
    batch.drop({("t", 0)})
    assert len(batch) == 2
    batch.drop({("t", 1)})
    assert not batch and batch.started is None
