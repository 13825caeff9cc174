"""Outages while the services run: the broker gone, the ClickHouse store refusing inserts.

Both back off, commit nothing they have not done, and catch up afterwards with nothing lost;
each prints its catch-up time. Short outages here (``make test``); the long run with every
part killed under load is ``driftctl bench chaos``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from pydantic import SecretStr

from consumers.sink import ClickHouseSink
from consumers.store import open_clickhouse, query
from deploy.broker import LocalBroker, free_port
from deploy.produce import produce_events
from deploy.scenarios import Drift, Scenario
from deploy.services import RestartPolicy, start_services
from runtime.kafka import (
    committed_offsets,
    end_offsets,
    read_topic,
    retry_transient,
    value_decoder,
    wait_caught_up,
)
from runtime.topics import ensure_topics
from schemas.codec import ALERT
from schemas.settings import Settings
from streams.config import build_monitor
from streams.processing import Message, handle_batch

OUTAGE_SECONDS = float(os.environ.get("DRIFT_TEST_OUTAGE_SECONDS", "20"))


def scenario(events_per_slice: int = 1600) -> Scenario:
    return Scenario(events_per_slice=events_per_slice, drifts=(Drift("eu-west", "amount", 1100),))


def expected_alert_ids(settings: Settings) -> set[str]:
    """The pure monitor over the events topic as it stands: what a run without the outage alerts."""
    from runtime.kafka import iter_topic

    monitor = build_monitor(settings)
    msgs = [Message(m.key(), m.value(), m.topic(), m.partition(), m.offset(), m.timestamp()[1])
            for m in iter_topic(settings, settings.topics.events, until_end=True)]  # fmt: skip
    out = handle_batch(monitor, msgs, int(time.time() * 1000))
    return {ALERT.decode(v)["alert_id"] for _k, v in out.alerts}


def committed(settings: Settings, group: str, topic: str) -> int:
    offsets = retry_transient(lambda: committed_offsets(settings, group, topic), "committed offsets", timeout=60)
    return sum(max(o, 0) for o in offsets.values())


def test_broker_gone_while_the_services_run(kafka_settings: Settings, tmp_path: Path) -> None:
    """Its own broker, killed with -9 for OUTAGE_SECONDS between two halves of a stream."""
    port = free_port()
    settings = kafka_settings.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{port}", "run_dir": tmp_path, "topic_prefix": "out",
        "app_id": "out-streams", "sink_group": "out-sink", "metrics_port": 0,
        "clickhouse_dsn": SecretStr(f"chdb:{tmp_path / 'ch'}"), "snapshot_every_seconds": 1.0,
    })  # fmt: skip
    from tests.conftest import SHARED_LIB_DIR

    broker = LocalBroker(settings, lib_dir=SHARED_LIB_DIR)
    broker.up()
    group = None
    try:
        ensure_topics(settings)
        events = list(scenario().events())
        half = len(events) // 2
        produce_events(settings, events[:half])
        group = start_services(settings, ("streams", "sink"), log_dir=tmp_path / "logs", policy=RestartPolicy(initial=0.5))
        stop = threading.Event()

        def supervise() -> None:
            while not stop.is_set():
                group.supervise()
                time.sleep(0.25)

        threading.Thread(target=supervise, daemon=True).start()
        assert wait_caught_up(settings, settings.app_id, settings.topics.events, timeout=120)
        before = committed(settings, settings.app_id, settings.topics.events)

        lines_before = _log_lines(tmp_path / "logs")
        os.kill(broker._running_pid(), signal.SIGKILL)
        gone_at = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        lines_during = _log_lines(tmp_path / "logs") - lines_before
        broker.up()
        back_at = time.monotonic()
        produce_events(settings, events[half:])
        assert wait_caught_up(settings, settings.app_id, settings.topics.events, timeout=180)
        for topic in (settings.topics.alerts, settings.topics.stats):
            assert wait_caught_up(settings, settings.sink_group, topic, timeout=120)
        catch_up = time.monotonic() - back_at
        print(f"\nbroker outage {back_at - gone_at:.0f}s: caught up {catch_up:.1f}s after it came back; "
              f"log lines during the outage {lines_during}; restarts {group.restarts()}")  # fmt: skip
        assert before == half
        assert committed(settings, settings.app_id, settings.topics.events) == len(events)
        alerts = read_topic(settings, settings.topics.alerts, decode=value_decoder(ALERT.decode), timeout=30)
        assert {a["alert_id"] for a in alerts} == expected_alert_ids(settings)
        assert any(a["slice"] == "eu-west" and a["feature"] == "amount" for a in alerts)
        stop.set()
        codes = group.stop()
        group = None
        assert set(codes.values()) <= {0, -signal.SIGTERM}, codes
        client = open_clickhouse(settings)
        _c, rows = query(client, "SELECT uniqExact(alert_id) FROM drift_alerts")
        assert rows[0][0] == len({a["alert_id"] for a in alerts})
        # one line per interval per kind of repeated error, not one per reconnect attempt
        assert lines_during < 60 * max(1.0, OUTAGE_SECONDS / 30), lines_during
    finally:
        if group is not None:
            group.stop()
        broker.down()


def _log_lines(log_dir: Path) -> int:
    return sum(len(p.read_text(errors="replace").splitlines()) for p in log_dir.glob("*.log"))


def test_sink_backs_off_while_the_store_refuses_inserts(kafka_settings: Settings, tmp_path: Path) -> None:
    """The real embedded store with its tables detached: inserts fail until they are attached again."""
    tag = f"{kafka_settings.topic_prefix}-store"
    settings = kafka_settings.model_copy(update={
        "topic_prefix": tag, "sink_group": f"{tag}-sink", "sink_flush_seconds": 0.2,
        "clickhouse_dsn": SecretStr(f"chdb:{tmp_path / 'ch'}"),
    })  # fmt: skip
    ensure_topics(settings)
    out = handle_batch(build_monitor(settings.model_copy(update={"stats_every_events": 100})),
                       _messages(scenario(1200), settings.topics.events), 0)  # fmt: skip
    stats = out.stats
    assert len(stats) > 40 and out.alerts
    half = len(stats) // 2
    _produce(settings, settings.topics.stats, stats[:half])
    sink = ClickHouseSink(settings)
    client = sink.client
    topic = settings.topics.stats
    try:
        _step_until(sink, lambda: committed(settings, settings.sink_group, topic) == half, 60)
        query(client, "DETACH TABLE drift_stats")
        failing_at = time.monotonic()
        _produce(settings, topic, stats[half:])
        _step_until(sink, lambda: sink.stats.insert_failures >= 3 and time.monotonic() - failing_at >= 5, 60)
        assert committed(settings, settings.sink_group, topic) == half  # nothing committed it did not store
        outage = time.monotonic() - failing_at
        query(client, "ATTACH TABLE drift_stats")
        back_at = time.monotonic()
        _step_until(sink, lambda: committed(settings, settings.sink_group, topic) == len(stats), 90)
        catch_up = time.monotonic() - back_at
        print(f"\nstore refused inserts for {outage:.1f}s ({sink.stats.insert_failures} failed attempts): "
              f"caught up {catch_up:.1f}s after it came back")  # fmt: skip
        _c, rows = query(client, "SELECT uniqExact(stat_id) FROM drift_stats")
        assert rows[0][0] == len(stats)  # nothing lost
        assert sum(end_offsets(settings, topic).values()) == len(stats)
    finally:
        sink.close()


def _messages(sc: Scenario, topic: str) -> list[Message]:
    from schemas.codec import EVENT

    return [Message(e["slice"].encode(), EVENT.encode(e), topic, 0, i, None) for i, e in enumerate(sc.events())]


def _produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer(settings.producer_config())
    for key, value in records:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def _step_until(sink: ClickHouseSink, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; sink stats {sink.stats}"
        for _ in range(5):
            sink.step()
