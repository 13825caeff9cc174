"""Malformed messages of every fuzz kind mixed into good traffic, through the real streams worker
and sink: each one in the dead-letter topic and table with a reason, every good event
processed (none dead-lettered, every offset committed), no crash, and a snapshot read of the
same offsets returns exactly the good events."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from consumers.query_server import open_reader
from deploy.fuzz import KINDS, good_event, malformed_messages
from deploy.services import start_services
from retrain_jobs.snapshot import read_snapshot
from runtime.kafka import committed_offsets, end_offsets, iter_topic
from schemas.codec import DEAD_LETTER
from schemas.errors import DriftError
from schemas.settings import Settings

N_BAD, N_GOOD = 1500, 3000


@pytest.fixture(scope="module")
def fuzzed(kafka_settings: Settings, tmp_path_factory):
    settings = kafka_settings.model_copy(update={
        "app_id": f"{kafka_settings.topic_prefix}-fuzz-streams",
        "sink_group": f"{kafka_settings.topic_prefix}-fuzz-sink",
        "metrics_port": 0,
    })  # fmt: skip
    start = end_offsets(settings, settings.topics.events)
    group = start_services(settings, ("streams", "sink"), log_dir=tmp_path_factory.mktemp("fuzz-logs"))
    producer = Producer(settings.producer_config(**{"message.max.bytes": 2_000_000}))
    bad: dict[tuple[int, int], str] = {}  # (partition, offset) -> kind
    good: set[tuple[int, int]] = set()
    failures: list[str] = []

    def delivered(kind):
        def cb(err, msg):
            if err is not None:
                failures.append(f"{kind}: {err}")
            elif kind == "good":
                good.add((msg.partition(), msg.offset()))
            else:
                bad[(msg.partition(), msg.offset())] = kind
        return cb

    fuzz = malformed_messages(N_BAD, seed=12)
    for i in range(N_GOOD):
        event = good_event(i, slice_=f"fz-{i % 3}")
        producer.produce(settings.topics.events, json.dumps(event).encode(), event["slice"].encode(),
                         on_delivery=delivered("good"))  # fmt: skip
        if i % 2 == 0 and i // 2 < N_BAD:
            kind, value = next(fuzz)
            producer.produce(settings.topics.events, value, f"fz-{i % 3}".encode(), on_delivery=delivered(kind))
        producer.poll(0)
    assert producer.flush(120) == 0 and not failures, failures[:5]
    yield settings, group, start, bad, good
    codes = group.stop()
    assert all(c == 0 for c in codes.values()), f"a service crashed: {codes}"


def test_every_malformed_message_is_dead_lettered_with_a_reason(fuzzed):
    settings, group, _start, bad, good = fuzzed
    assert len(bad) == N_BAD and set(Counter(bad.values())) == set(KINDS)
    letters = {}
    deadline = time.monotonic() + 240
    while len(letters) < len(bad) and time.monotonic() < deadline:
        for msg in iter_topic(settings, settings.topics.dlq, decode=lambda m: DEAD_LETTER.decode(m.value()),
                              until_end=True, timeout=60):  # fmt: skip
            letters[(msg["source_partition"], msg["source_offset"])] = msg
        time.sleep(1)
        assert all(group.alive().values()), f"a service died: {group.alive()}"
    mine = {k: v for k, v in letters.items() if k in bad or k in good}
    assert set(mine) == set(bad), f"missing {len(set(bad) - set(mine))}, good ones dead-lettered: {len(set(mine) & good)}"
    assert all(dl["reason"] and dl["error_type"] == "SchemaError" for dl in mine.values())


def test_every_good_event_is_processed_and_committed(fuzzed):
    settings, group, _start, _bad, _good = fuzzed
    ends = end_offsets(settings, settings.topics.events)
    deadline = time.monotonic() + 120
    while committed_offsets(settings, settings.app_id, settings.topics.events) != ends:
        assert time.monotonic() < deadline, "the streams worker did not commit past the fuzzed messages"
        assert all(group.alive().values()), f"a service died: {group.alive()}"
        time.sleep(1)


def test_the_dead_letters_table_has_them_with_their_reasons(fuzzed):
    settings, _group, _start, bad, _good = fuzzed
    deadline, rows = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        try:
            reader = open_reader(settings)
            try:
                _cols, rows = reader.query(
                    "SELECT count(), countIf(reason = '') FROM dead_letters FINAL WHERE error_type = 'SchemaError'"
                )
            finally:
                reader.close()
        except DriftError:
            rows = []
        if rows and rows[0][0] >= len(bad):
            break
        time.sleep(2)
    assert rows and rows[0][0] >= len(bad) and rows[0][1] == 0, rows


def test_a_snapshot_of_the_same_offsets_returns_exactly_the_good_events(fuzzed):
    settings, _group, start, _bad, good = fuzzed
    ends = end_offsets(settings, settings.topics.events)
    snapshot = {"topic": settings.topics.events, "labelled_only": False,
                "ranges": [{"partition": p, "start_offset": start.get(p, 0), "end_offset": e} for p, e in ends.items()]}
    events = read_snapshot(settings, snapshot)
    assert len([e for e in events if e["model"] == "fuzz-model"]) == len(good)
