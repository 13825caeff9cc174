"""One message in, records out; a bad message becomes a dead letter, never an exception."""

from __future__ import annotations

from schemas.codec import DEAD_LETTER, EVENT
from schemas.settings import load_settings
from streams.config import prototypes
from streams.monitor import Monitor, MonitorConfig
from streams.processing import Batch, Message, handle, handle_batch


def monitor() -> Monitor:
    return Monitor(prototypes(load_settings()), MonitorConfig(worker_id="w1"))


def test_malformed_message_goes_to_dead_letter_with_reason_and_origin():
    msg = Message(b"eu", b"{broken", "drift.events", 2, 41, 1234)
    out = handle(monitor(), msg, now_ms=99)
    assert out.alerts == [] and out.stats == [] and len(out.dead_letters) == 1
    key, value = out.dead_letters[0]
    dl = DEAD_LETTER.decode(value)
    assert key == b"eu"
    assert dl["original_value"] == b"{broken" and "invalid JSON" in dl["reason"]
    assert (dl["source_topic"], dl["source_partition"], dl["source_offset"]) == ("drift.events", 2, 41)
    assert dl["error_type"] == "SchemaError" and dl["worker_id"] == "w1"


def test_unexpected_failure_is_contained():
    class Exploding(Monitor):
        def _slice_batch(self, *a, **k):
            raise RuntimeError("boom")

    ok = EVENT.encode({"event_id": "a", "event_time": 1, "model": "m", "slice": "s", "features": {"x": 1.0}, "categorical": {}})
    out = handle(Exploding({}, MonitorConfig()), Message(None, ok, "t", 0, 1, None), 0)
    dl = DEAD_LETTER.decode(out.dead_letters[0][1])
    assert "RuntimeError: boom" in dl["reason"] and dl["original_key"] is None


def test_good_message_updates_state():
    m = monitor()
    ok = EVENT.encode({"event_id": "a", "event_time": 1, "model": "m", "slice": "s", "features": {"x": 1.0}, "categorical": {}})
    out = handle(m, Message(b"s", ok, "t", 0, 7, None), 0)
    assert out.dead_letters == [] and out.state is m.slices[("m", "s")]
    assert out.state.last_offset == {("t", 0): 7}


def _events_batch(n: int = 300) -> list[Message]:
    msgs = []
    for i in range(n):
        event = {"event_id": f"e{i}", "event_time": i, "model": "m", "slice": f"s{i % 3}",
                 "features": {"x": float(i % 7)}, "categorical": {"c": "ab"[i % 2]}, "prediction": 0.2, "label": i % 2}
        msgs.append(Message(f"s{i % 3}".encode(), EVENT.encode(event), "t", i % 2, i // 2, 1000 + i))
    msgs[17] = msgs[17]._replace(value=b"\xc3\x01broken")  # a dead letter among them
    return msgs


def test_the_worker_builds_the_same_batch_from_kafka_messages():
    """kafka_batch (columns in C-level passes) gives handle_batch what Message tuples give it,
    and drops the messages that carry a consumer error."""
    from confluent_kafka import KafkaError
    from confluent_kafka import Message as KafkaMessage

    from streams.app import kafka_batch

    msgs = _events_batch()
    kafka = [KafkaMessage(topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                          timestamp=(1, m.timestamp_ms)) for m in msgs]  # fmt: skip
    eof = KafkaMessage(topic="t", partition=0, offset=5, error=KafkaError(KafkaError._PARTITION_EOF))
    batch = kafka_batch([*kafka[:100], eof, *kafka[100:]])
    assert len(batch) == len(msgs) and [batch.message(i) for i in range(len(batch))] == msgs
    a, b = monitor(), monitor()
    by_tuples, by_columns = handle_batch(a, msgs, 5), handle_batch(b, batch, 5)
    assert len(by_tuples.dead_letters) == 1 and DEAD_LETTER.decode(by_tuples.dead_letters[0][1])["source_offset"] == 8
    assert (by_tuples.stats, by_tuples.dead_letters, by_tuples.touched) == (by_columns.stats, by_columns.dead_letters,
                                                                           by_columns.touched)  # fmt: skip
    assert {k: st.last_offset for k, st in a.slices.items()} == {k: st.last_offset for k, st in b.slices.items()}


def test_batch_of_nothing():
    out = handle_batch(monitor(), Batch.of([]), 0)
    assert (out.alerts, out.stats, out.dead_letters, out.touched) == ([], [], [], {})
