"""In-memory stand-ins for confluent_kafka's Message, Consumer and Producer, shared by the unit
tests of the consumer loops (sink, router service, retrain worker). They cover only the surface
those loops use; integration tests use the real broker."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, TopicPartition

T0 = 1_700_000_000_000  # default message timestamp (epoch ms)


class FakeMessage:
    """A consumed record; ``error`` set makes it an error event like the real poll() returns."""

    def __init__(self, topic, partition, offset, value, key=None, error=None, timestamp=T0):
        self._t, self._p, self._o, self._v, self._k, self._e, self._ts = (
            topic, partition, offset, value, key, error, timestamp)  # fmt: skip

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def key(self):
        return self._k

    def error(self):
        return self._e

    def timestamp(self):
        return (TIMESTAMP_CREATE_TIME, self._ts)


def commit_dict(commit: list[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """One recorded commit as {(topic, partition): offset}."""
    return {(topic, partition): offset for topic, partition, offset in commit}


class FakeConsumer:
    """Serves queued messages, honours per-partition pause/resume, records synchronous commits.

    The assignment is the set of partitions of the initial messages; it is handed to the
    ``on_assign`` callback of ``subscribe`` on the first poll, like a real group join.
    """

    def __init__(self, messages=(), on_commit: Callable[[list[TopicPartition]], Any] | None = None):
        self.queue = deque(messages)
        self.commits: list[list[tuple[str, int, int]]] = []
        self.on_commit = on_commit
        self.paused: set[tuple[str, int]] = set()
        self.assigned = sorted({(m.topic(), m.partition()) for m in messages})
        self.topics = None
        self.on_assign = self.on_revoke = None
        self.joined = False
        self.closed = False

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None):
        self.topics, self.on_assign, self.on_revoke = topics, on_assign, on_revoke
        self.joined = False

    def feed(self, *messages):
        self.queue.extend(messages)

    def poll(self, timeout=None):
        if not self.joined:  # like a real group join: the first poll serves the assignment
            self.joined = True
            if self.on_assign:
                self.on_assign(self, self.assignment())
        for msg in list(self.queue):
            if (msg.topic(), msg.partition()) not in self.paused:
                self.queue.remove(msg)
                return msg
        time.sleep(min(timeout or 0, 0.01))
        return None

    def commit(self, offsets=None, asynchronous=True):
        assert asynchronous is False, "offsets must be committed synchronously"
        if self.on_commit:
            self.on_commit(offsets)
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return offsets

    def assignment(self):
        return [TopicPartition(t, p) for t, p in self.assigned]

    def pause(self, partitions):
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions):
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, partition):
        raise AssertionError("the fake serves nothing from a paused partition, so nothing needs seeking")

    def close(self):
        self.closed = True


class FakeProducer:
    """Queues produced records and acknowledges them on flush; the first ``fail`` deliveries fail
    with a timeout. ``codec`` decodes delivered values; ``on_ack`` sees each acknowledged one."""

    def __init__(self, codec=None, fail: int = 0, on_ack: Callable[[Any], Any] | None = None):
        self.codec, self.fail, self.on_ack = codec, fail, on_ack
        self.pending: list[tuple] = []
        self.delivered: list[tuple[str, bytes | None, Any]] = []

    def produce(self, topic, key=None, value=None, on_delivery=None):
        self.pending.append((topic, key, value, on_delivery))

    def flush(self, timeout=None):
        for topic, key, value, cb in self.pending:
            if self.fail:
                self.fail -= 1
                cb(KafkaError(KafkaError._MSG_TIMED_OUT), None)
                continue
            record = self.codec.decode(value) if self.codec else value
            self.delivered.append((topic, key, record))
            if self.on_ack:
                self.on_ack(record)
            cb(None, None)
        self.pending = []
        return 0
