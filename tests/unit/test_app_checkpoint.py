"""The worker's checkpoint protocol, with Kafka replaced by recording fakes.

What must hold: outputs are durable before the snapshots that cover their events, the
snapshots before the commit; nothing is committed when a delivery failed; revocation
checkpoints exactly the partitions that leave; an evicted or restored slice continues
from its snapshot.
"""

from __future__ import annotations

import json

import pytest
from confluent_kafka import TopicPartition

from deploy.scenarios import Drift, Scenario
from schemas.codec import ALERT, EVENT
from schemas.settings import load_settings
from streams import app as app_module
from streams.app import DeliveryFailed, StreamsApp, state_key
from streams.state import decode_state, encode_state

TOPIC = "drift.events"


class FakeMsg:
    def __init__(self, partition: int, offset: int, key: bytes | None, value: bytes | None):
        self._p, self._o, self._k, self._v = partition, offset, key, value

    def error(self):
        return None

    def key(self):
        return self._k

    def value(self):
        return self._v

    def topic(self):
        return TOPIC

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def timestamp(self):
        return (1, 0)


class FakeProducer:
    def __init__(self, log: list, fail: bool = False):
        self.log, self.fail, self.pending, self.sent = log, fail, [], []

    def produce(self, topic, value=None, key=None, partition=None, on_delivery=None):
        self.log.append(("produce", topic))
        self.pending.append((topic, key, value, partition, on_delivery))
        self.sent.append((topic, key, partition))

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=0):
        self.log.append(("flush",))
        for topic, key, value, partition, cb in self.pending:
            cb("broker said no" if self.fail else None, FakeMsg(partition or 0, 0, key, value))
        self.pending.clear()
        return 0


class FakeConsumer:
    def __init__(self, log: list):
        self.log = log

    def commit(self, offsets, asynchronous=True):
        self.log.append(("commit", {tp.partition: tp.offset for tp in offsets}))

    def close(self):
        pass


def make_app(fail: bool = False, **overrides) -> tuple[StreamsApp, list]:
    settings = load_settings(topic_prefix="drift", worker_id="w", **overrides)
    log: list = []
    app = StreamsApp(settings)
    app.producer, app.consumer = FakeProducer(log, fail), FakeConsumer(log)
    return app, log


def messages(scenario: Scenario, partition_of: dict[str, int]) -> list[FakeMsg]:
    """Scenario events as consumed messages, each slice in its own partition (offsets per partition)."""
    next_offset: dict[int, int] = {}
    out = []
    for e in scenario.events():
        p = partition_of[e["slice"]]
        out.append(FakeMsg(p, next_offset.get(p, 0), e["slice"].encode(), EVENT.encode(e)))
        next_offset[p] = next_offset.get(p, 0) + 1
    return out


SLICES = {"eu-west": 0, "us-east": 1}


def test_outputs_then_snapshots_then_commit():
    app, log = make_app()
    scenario = Scenario(
        slices=tuple(SLICES), events_per_slice=1200, drifts=(Drift("eu-west", "amount", 600, size=3.0),)
    )
    msgs = messages(scenario, SLICES)
    out = app.process(msgs, now=0.0)
    assert out.alerts, "the scenario should alert"
    log.clear()
    app.checkpoint(now=1.0)
    kinds = [
        entry[0] if entry[0] != "produce" else ("snapshot" if entry[1] == app.state_topic else "output")
        for entry in log
    ]
    assert kinds == ["flush", "snapshot", "snapshot", "flush", "commit"]
    assert log[-1] == ("commit", {0: 1200, 1: 1200})
    assert all(st.events_since_snapshot == 0 for st in app.monitor.slices.values())


def test_snapshot_goes_to_the_partition_of_its_slice_and_into_the_table():
    app, _ = make_app()
    app.process(messages(Scenario(slices=tuple(SLICES), events_per_slice=50, drifts=()), SLICES), now=0.0)
    app.checkpoint(now=1.0)
    sent = {
        json.loads(key): partition for topic, key, partition in app.producer.sent if topic == app.state_topic
    }
    assert sent == {state_key("demo-model", s): p for s, p in SLICES.items()}
    for slice_, partition in SLICES.items():
        blob = app.table.get(state_key("demo-model", slice_))
        assert blob is not None and app.table._partition[state_key("demo-model", slice_)] == partition
        st = decode_state(blob)
        assert st.last_offset == {(TOPIC, partition): 49} and st.events == 50


def test_nothing_is_committed_when_a_delivery_failed():
    app, log = make_app(fail=True)
    bad = FakeMsg(0, 0, b"k", b"not an event")  # becomes a dead letter: one output to deliver
    app.process([bad], now=0.0)
    with pytest.raises(DeliveryFailed):
        app.checkpoint(now=1.0)
    assert not [e for e in log if e[0] == "commit"]


def test_revocation_checkpoints_and_forgets_only_the_partitions_that_leave():
    app, log = make_app()
    app.process(messages(Scenario(slices=tuple(SLICES), events_per_slice=100, drifts=()), SLICES), now=0.0)
    log.clear()
    app._on_revoke(None, [TopicPartition(TOPIC, 1)])
    assert ("commit", {1: 100}) in log and not [e for e in log if e[0] == "commit" and 0 in e[1]]
    assert set(app.monitor.slices) == {("demo-model", "eu-west")}
    assert app.table.get(state_key("demo-model", "us-east")) is None
    assert app.monitor.slices[("demo-model", "eu-west")].events_since_snapshot == 100


class SourceMsg(FakeMsg):
    def topic(self):
        return "shop.orders"


def test_a_bridged_source_is_forwarded_to_the_events_topic_and_carries_no_slice_state():
    """A user's topic with any key and partition count: its mapped events go to the events
    topic keyed by slice; its offsets commit after they are acknowledged; its partitions'
    numbers never move slice state."""
    from streams.sources import build_sources

    app, log = make_app()
    app.sources = build_sources([{"topic": "shop.orders", "model": {"value": "shop"}, "slice": "region",
                                  "event_id": "id", "event_time": "ts", "features": ["amount"]}])
    app.bridged = frozenset(app.sources)
    app.process(messages(Scenario(slices=tuple(SLICES), events_per_slice=100, drifts=()), SLICES), now=0.0)
    users = [SourceMsg(5, i, None, json.dumps({"id": f"o{i}", "ts": 1_790_000_000_000 + i, "region": "eu-west",
                                               "amount": 10.0 + i % 3}).encode()) for i in range(3)]
    users.append(SourceMsg(1, 0, None, b'{"id": "bad", "ts": 1, "region": "eu-west", "amount": "lots"}'))
    out = app.process(users, now=0.0)
    assert [EVENT.decode(v)["event_id"] for _, v in out.forwards] == ["o0", "o1", "o2"]
    assert {k for k, _ in out.forwards} == {b"eu-west"} and len(out.dead_letters) == 1
    assert ("shop", "eu-west") not in app.monitor.slices, "monitored from the events topic, not here"
    log.clear()
    app._on_revoke(None, [TopicPartition("shop.orders", 1)])  # same number as us-east's events partition
    assert log[0] == ("flush",) and log[-1] == ("commit", {1: 1}), "the forwarded events are acknowledged first"
    assert set(app.monitor.slices) == {("demo-model", "eu-west"), ("demo-model", "us-east")}
    app.checkpoint(now=1.0)
    assert app.committed == {(TOPIC, 0): 100, (TOPIC, 1): 100, ("shop.orders", 5): 3}


def test_idle_slice_is_evicted_at_a_checkpoint_and_continues_from_its_snapshot():
    app, _ = make_app(evict_idle_seconds=30.0)
    msgs = messages(Scenario(slices=tuple(SLICES), events_per_slice=300, drifts=()), SLICES)
    first, later = msgs[:400], msgs[400:]
    app.process(first, now=0.0)
    seen_before = app.monitor.slices[("demo-model", "eu-west")].events
    app.checkpoint(now=31.0)
    assert app.monitor.slices == {}, "both slices were idle for 31 s"
    app.process(later, now=32.0)
    st = app.monitor.slices[("demo-model", "eu-west")]
    assert st.events == 300 and seen_before == 200
    assert app.restored == 2


def test_restore_on_assignment_feeds_the_loader(monkeypatch):
    donor, _ = make_app()
    donor.process(
        messages(Scenario(slices=("eu-west",), events_per_slice=250, drifts=()), {"eu-west": 0}), now=0.0
    )
    blob = encode_state(donor.monitor.slices[("demo-model", "eu-west")])
    records = [(0, json.dumps(state_key("demo-model", "eu-west")).encode(), blob)]
    monkeypatch.setattr(app_module, "read_changelog", lambda settings, topic, partitions: iter(records))

    app, _ = make_app()
    app._on_assign(None, [TopicPartition(TOPIC, 0)])
    more = messages(Scenario(slices=("eu-west",), events_per_slice=260, drifts=()), {"eu-west": 0})
    app.process(more, now=0.0)  # offsets 0..249 are already in the snapshot and are skipped
    st = app.monitor.slices[("demo-model", "eu-west")]
    assert st.events == 260 and st.last_offset == {(TOPIC, 0): 259}


def test_an_alert_makes_the_next_checkpoint_due_at_once():
    app, _ = make_app(snapshot_every_events=10**6, snapshot_every_seconds=3600)
    scenario = Scenario(
        slices=("eu-west",), events_per_slice=1200, drifts=(Drift("eu-west", "amount", 600, size=3.0),)
    )
    msgs = messages(scenario, {"eu-west": 0})
    for i in range(0, len(msgs), 100):
        out = app.process(msgs[i : i + 100], now=1.0)
        if out.alerts:
            assert app.policy.due(1.0)
            assert ALERT.decode(out.alerts[0][1])["slice"] == "eu-west"
            break
        assert not app.policy.due(1.0)
    else:
        pytest.fail("no alert")


def test_source_topics_must_match_the_events_partitions():
    from schemas.errors import ConfigError
    from streams.app import check_source_partitions

    counts = {"drift.events": 3, "payments": 3, "clicks": 6}
    check_source_partitions(counts, "drift.events", ["payments", "not-created-yet"])
    with pytest.raises(ConfigError, match=r"'clicks': 6.*drift.events \(3\)"):
        check_source_partitions(counts, "drift.events", ["payments", "clicks"])
