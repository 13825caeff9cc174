"""Events in, a typed alert out, a row in ClickHouse: on a real broker and the real engine."""

from __future__ import annotations

import threading
import time
from contextlib import closing

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

from consumers.sink import ClickHouseSink
from consumers.store import close_clickhouse, open_clickhouse, query
from deploy.produce import produce_events
from deploy.scenarios import Drift, Scenario
from deploy.services import start_services
from runtime.kafka import iter_topic
from schemas.codec import ALERT, DEAD_LETTER
from schemas.settings import Settings


def read_all(settings: Settings, topic: str, until, timeout: float) -> list:
    """Messages of ``topic`` from the beginning until ``until(got)`` holds or ``timeout`` passes."""
    got: list = []
    with closing(iter_topic(settings, topic, timeout=timeout)) as msgs:
        if until(got):
            return got
        for msg in msgs:
            got.append(msg)
            if until(got):
                break
    return got


@pytest.fixture(scope="module")
def pipeline(kafka_settings: Settings, tmp_path_factory):
    """The streams worker as its own process (as `driftctl run` starts it), with its own app id."""
    settings = kafka_settings.model_copy(
        update={"app_id": f"{kafka_settings.topic_prefix}-streams", "sink_group": f"{kafka_settings.topic_prefix}-sink"}
    )
    group = start_services(settings, ("streams",), log_dir=tmp_path_factory.mktemp("logs"))
    yield settings
    codes = group.stop()
    assert codes["streams"] == 0, f"streams worker exit code {codes}"


def test_drift_alert_and_dead_letter_end_to_end(pipeline: Settings, tmp_path):
    settings = pipeline
    scenario = Scenario(events_per_slice=2000, drifts=(Drift("eu-west", "amount", 1000, size=2.0),))
    producer = Producer(settings.producer_config())
    producer.produce(settings.topics.events, key=b"eu-west", value=b'{"event_id": "bad", "features": ')
    producer.produce(settings.topics.events, key=b"eu-west", value=b"\x00\x01 not an event")
    assert producer.flush(30) == 0
    assert produce_events(settings, scenario.events()) == scenario.total_events

    def has_target(msgs):
        alerts = [ALERT.decode(m.value()) for m in msgs]
        return any(a["slice"] == "eu-west" and a["feature"] == "amount" for a in alerts)

    msgs = read_all(settings, settings.topics.alerts, has_target, timeout=120)
    alerts = [ALERT.decode(m.value()) for m in msgs]
    assert has_target(msgs), f"no alert on eu-west/amount; got {[(a['slice'], a['feature']) for a in alerts]}"
    assert {(a["slice"], a["feature"]) for a in alerts} == {("eu-west", "amount")}, "false alarm on a stable slice"
    alert = alerts[0]
    assert alert["alert_type"] == "DATA_DRIFT" and alert["detector"] == "adwin"
    assert msgs[0].key() == b"eu-west"
    onset_time = next(
        e["event_time"] for i, e in enumerate(scenario.events())
        if e["slice"] == "eu-west" and e["event_id"].endswith("-1000")
    )
    assert alert["window_end_event_time"] >= onset_time
    assert alert["first_offset"] <= alert["last_offset"]
    assert alert["partition"] == msgs[0].partition() or alert["topic"] == settings.topics.events

    dead = read_all(settings, settings.topics.dlq, lambda got: len(got) >= 2, timeout=30)
    letters = [DEAD_LETTER.decode(m.value()) for m in dead]
    assert len(letters) == 2
    assert {dl["original_value"] for dl in letters} == {b'{"event_id": "bad", "features": ', b"\x00\x01 not an event"}
    assert all(dl["reason"] and dl["source_topic"] == settings.topics.events for dl in letters)

    # the sink: alerts and dead letters land in ClickHouse; a replayed alert does not add a row
    sink_settings = settings.model_copy(update={"clickhouse_dsn": SecretStr(f"chdb:{tmp_path / 'ch'}")})
    replay = Producer(settings.producer_config())
    replay.produce(settings.topics.alerts, key=msgs[0].key(), value=msgs[0].value())
    assert replay.flush(30) == 0
    sink = ClickHouseSink(sink_settings)
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    worker.start()
    client = open_clickhouse(sink_settings)
    try:  # chdb hosts one data path per process: close it for the tests that follow
        deadline = time.monotonic() + 60
        n_alerts = n_dead = 0
        while time.monotonic() < deadline and not (n_alerts >= len(alerts) and n_dead >= 2):
            time.sleep(1)
            n_alerts = query(client, "SELECT count() FROM drift_alerts FINAL")[1][0][0]
            n_dead = query(client, "SELECT count() FROM dead_letters FINAL")[1][0][0]
        stop.set()
        worker.join(30)
        assert n_dead == 2
        on_topic = {ALERT.decode(m.value())["alert_id"] for m in read_all(settings, settings.topics.alerts, lambda g: False, 5)}
        _, rows = query(client, "SELECT alert_id, count() FROM drift_alerts FINAL GROUP BY alert_id")
        assert {r[0] for r in rows} == on_topic and all(r[1] == 1 for r in rows), "a replayed alert made a second row"
        raw = query(client, "SELECT count() FROM drift_alerts")[1][0][0]
        assert raw >= len(rows)  # duplicates may sit unmerged; FINAL collapses them
        stat_rows = query(client, "SELECT count() FROM drift_stats FINAL")[1][0][0]
        assert stat_rows > 0
    finally:
        close_clickhouse(client)
