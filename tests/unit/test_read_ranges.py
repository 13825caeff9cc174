"""runtime.kafka.read_ranges over an in-memory log: where it starts, where it stops, what it skips."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from runtime.kafka import RangeReadTimeout, read_ranges
from schemas.settings import load_settings
from tests.fakes import FakeMessage

SETTINGS = load_settings()
TOPIC = "t"


class LogConsumer:
    """Partitions as lists of offsets: ``watermarks`` as of the read, ``log`` possibly longer (records
    produced meanwhile); ``errors`` are handed out first; an EOF event follows each partition's last record."""

    def __init__(self, log, watermarks, errors=(), eof=True):
        self.log, self.marks, self.errors, self.eof = log, watermarks, list(errors), eof
        self.assigned: dict[int, int] = {}
        self.closed = False

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return self.marks[tp.partition]

    def assign(self, tps):
        self.assigned = {tp.partition: tp.offset for tp in tps}
        self.pos = dict(self.assigned)

    def consume(self, num_messages=1, timeout=-1):
        out = [self.errors.pop(0)] if self.errors else []
        for p, at in self.pos.items():  # one record (or the EOF event) per partition per call: interleaved
            later = [o for o in self.log[p] if o >= at]
            if later:
                out.append(FakeMessage(TOPIC, p, later[0], f"{p}@{later[0]}".encode()))
                self.pos[p] = later[0] + 1
            elif self.eof and at >= 0:  # librdkafka reports the log end: past a control record it skipped
                end = max([self.marks[p][1], *(o + 1 for o in self.log[p])])
                out.append(FakeMessage(TOPIC, p, end, None, error=KafkaError(KafkaError._PARTITION_EOF)))
                self.pos[p] = -1  # one EOF event
        return out

    def close(self):
        self.closed = True


def values(consumer, **kwargs):
    return [m.value().decode() for m in read_ranges(SETTINGS, TOPIC, [0, 1], consumer=consumer, **kwargs)]


def test_reads_everything_retained_and_nothing_produced_meanwhile():
    c = LogConsumer({0: [3, 4, 5, 6], 1: [0, 1]}, {0: (3, 5), 1: (0, 2)})  # offsets 5, 6 came after the call
    got = values(c)
    assert sorted(got) == ["0@3", "0@4", "1@0", "1@1"]
    assert c.assigned == {0: 3, 1: 0} and c.closed


def test_bounds_choose_each_partitions_range_and_empty_ranges_are_left_out():
    c = LogConsumer({0: list(range(10)), 1: []}, {0: (0, 10), 1: (0, 0)})
    assert values(c, bounds=lambda p, low, high: (max(low, high - 3), high)) == ["0@7", "0@8", "0@9"]
    assert c.assigned == {0: 7}
    nothing = LogConsumer({0: [], 1: []}, {0: (4, 4), 1: (0, 0)})
    assert values(nothing) == [] and nothing.assigned == {} and nothing.closed


def test_an_end_offset_that_never_arrives_ends_at_the_partitions_eof():
    c = LogConsumer({0: [0, 1, 3], 1: []}, {0: (0, 5), 1: (0, 0)})  # offset 4: a control record, never consumed
    assert values(c) == ["0@0", "0@1", "0@3"]


def test_errors_are_logged_and_skipped_and_fatal_ones_raise(caplog):
    err = FakeMessage(TOPIC, 0, -1, None, error=KafkaError(KafkaError._TRANSPORT, "broker down"))
    c = LogConsumer({0: [0, 1], 1: []}, {0: (0, 2), 1: (0, 0)}, errors=[err])
    with caplog.at_level(logging.WARNING, logger="runtime.kafka"):
        assert values(c, what="restore") == ["0@0", "0@1"]
    assert "restore error" in caplog.text and "broker down" in caplog.text
    fatal = FakeMessage(TOPIC, 0, -1, None, error=KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    c = LogConsumer({0: [0], 1: []}, {0: (0, 1), 1: (0, 0)}, errors=[fatal])
    with pytest.raises(KafkaException):
        values(c)
    assert c.closed


def test_a_range_not_read_in_time_raises_naming_the_partitions():
    c = LogConsumer({0: [], 1: []}, {0: (0, 2), 1: (0, 0)}, eof=False)  # the records never come
    with pytest.raises(RangeReadTimeout, match=r"partitions \[0\] not read") as info:
        values(c, timeout=0)
    assert info.value.pending == {0: 2} and isinstance(info.value, KafkaException) and c.closed


def test_on_error_replaces_the_log_and_skip_policy():
    err = FakeMessage(TOPIC, 1, -1, None, error=KafkaError(KafkaError._TRANSPORT, "broker down"))
    seen = []
    c = LogConsumer({0: [0], 1: []}, {0: (0, 1), 1: (0, 0)}, errors=[err])
    assert values(c, on_error=seen.append) == ["0@0"] and seen == [err]

    def fail(msg):
        raise RuntimeError(f"read failed: {msg.error()}")

    c = LogConsumer({0: [0], 1: []}, {0: (0, 1), 1: (0, 0)}, errors=[err])
    with pytest.raises(RuntimeError, match="broker down"):
        values(c, on_error=fail)
    assert c.closed
