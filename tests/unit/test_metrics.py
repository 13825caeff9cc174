"""Feedback while working: Prometheus metrics, structured logs, progress bars."""

from __future__ import annotations

import io
import json
import logging
import urllib.request

import pytest
from prometheus_client import REGISTRY

from deploy.broker import free_port
from runtime import metrics
from runtime.logs import JsonFormatter, TextFormatter, for_message, kafka_fields, setup_logging
from runtime.progress import progress
from schemas.codec import ALERT
from schemas.settings import load_settings
from streams.processing import Outgoing
from tests.unit.monitoring_data import ALERTS


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- metrics -------------------------------------------------------------------------------------


def test_service_ports_follow_the_base_port_and_zero_turns_them_off():
    s = load_settings(metrics_port=9500)
    assert [metrics.service_port(s, n) for n in ("streams", "sink", "router", "retrain", "rollout")] == [
        9500, 9501, 9502, 9503, 9504]
    assert metrics.service_port(load_settings(metrics_port=0), "sink") is None
    assert metrics.stats_config(load_settings(kafka_stats_interval_ms=0)) == {}
    conf = metrics.stats_config(load_settings(kafka_stats_interval_ms=1000))
    assert conf["statistics.interval.ms"] == 1000 and conf["stats_cb"] is metrics.record_kafka_stats


def test_consumer_lag_comes_from_librdkafka_statistics():
    stats = {
        "name": "rdkafka#consumer-1", "client_id": "drift-sink-w1", "type": "consumer",
        "topics": {"t.alerts": {"partitions": {
            "0": {"consumer_lag_stored": 12, "consumer_lag": 10},
            "1": {"consumer_lag_stored": -1, "consumer_lag": 4},  # nothing stored yet: fall back
            "2": {"consumer_lag_stored": -1, "consumer_lag": -1},  # unknown: skipped
            "-1": {"consumer_lag_stored": 99, "consumer_lag": 99},  # internal partition: skipped
        }}},
    }  # fmt: skip
    assert metrics.record_kafka_stats(json.dumps(stats)) == 2
    lag = "driftwatch_consumer_lag"
    assert value(lag, client="drift-sink-w1", topic="t.alerts", partition="0") == 12
    assert value(lag, client="drift-sink-w1", topic="t.alerts", partition="1") == 4
    assert REGISTRY.get_sample_value(lag, {"client": "drift-sink-w1", "topic": "t.alerts", "partition": "2"}) is None
    assert metrics.record_kafka_stats("not json") == 0


def test_streams_batches_count_events_stats_alerts_and_dead_letters():
    before = {
        "events": value("driftwatch_events_total", topic="t.events"),
        "high": value("driftwatch_alerts_total", alert_type="DATA_DRIFT", severity="HIGH"),
        "low": value("driftwatch_alerts_total", alert_type="DATA_QUALITY", severity="LOW"),
        "dead": value("driftwatch_dead_letters_total", service="streams"),
        "stats": value("driftwatch_stats_total"),
    }
    out = Outgoing(
        alerts=[(b"k", ALERT.encode(a)) for a in (ALERTS[0], ALERTS[2], ALERTS[4])],
        stats=[(b"k", b"s")] * 4,
        dead_letters=[(None, b"d")],
    )
    metrics.observe_streams(out, 500, "t.events")
    assert value("driftwatch_events_total", topic="t.events") - before["events"] == 500
    assert value("driftwatch_alerts_total", alert_type="DATA_DRIFT", severity="HIGH") - before["high"] == 2
    assert value("driftwatch_alerts_total", alert_type="DATA_QUALITY", severity="LOW") - before["low"] == 1
    assert value("driftwatch_dead_letters_total", service="streams") - before["dead"] == 1
    assert value("driftwatch_stats_total") - before["stats"] == 4


def test_retrain_helpers_count_jobs_and_parameters():
    from tests.unit.monitoring_data import REQUESTS, RESULTS

    jobs = ("driftwatch_retrain_jobs_total", {"model": "m", "tier": "ADAPTER", "decision": "PROMOTED"})
    before = (REGISTRY.get_sample_value(*jobs) or 0, value("driftwatch_retrain_params_updated_total"))
    metrics.observe_retrain_request(REQUESTS[0])
    metrics.observe_retrain_result(RESULTS[0])
    assert REGISTRY.get_sample_value(*jobs) - before[0] == 1
    assert value("driftwatch_retrain_params_updated_total") - before[1] == 1000
    assert value("driftwatch_retrain_requests_total", model="m", tier="ADAPTER") >= 1
    assert value("driftwatch_retrain_train_seconds_count", tier="ADAPTER") >= 1


def test_the_metrics_endpoint_serves_the_names():
    port = free_port()
    settings = load_settings(metrics_port=port, metrics_host="127.0.0.1")
    assert metrics.start_metrics(settings, "streams") == port
    metrics.SINK_ROWS.labels("drift_alerts").inc(3)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for name in ("driftwatch_events_total", "driftwatch_alerts_total", "driftwatch_consumer_lag",
                 "driftwatch_sink_rows_total", "driftwatch_retrain_jobs_total", "driftwatch_query_requests_total"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in body, name
    assert 'driftwatch_sink_rows_total{table="drift_alerts"}' in body
    assert metrics.start_metrics(settings, "streams") is None  # port taken: logged, not fatal


# --- logs ----------------------------------------------------------------------------------------


class FakeMessage:
    def topic(self):
        return "drift.events"

    def partition(self):
        return 2

    def offset(self):
        return 41


def record(logger: str, level: int, msg: str, extra: dict | None = None) -> logging.LogRecord:
    rec = logging.getLogger(logger).makeRecord(logger, level, "f.py", 1, msg, (), None, extra=extra)
    return rec


def test_json_lines_carry_topic_partition_offset_and_other_extras():
    line = JsonFormatter("sink").format(record("consumers.sink", logging.WARNING, "bad message",
                                               {**kafka_fields(FakeMessage()), "table": "drift_alerts"}))  # fmt: skip
    entry = json.loads(line)
    assert entry["msg"] == "bad message" and entry["level"] == "WARNING" and entry["service"] == "sink"
    assert (entry["topic"], entry["partition"], entry["offset"], entry["table"]) == ("drift.events", 2, 41, "drift_alerts")
    assert list(entry)[-4:] == ["topic", "partition", "offset", "table"]


def test_text_lines_append_the_fields():
    line = TextFormatter("sink").format(record("x", logging.INFO, "stored", kafka_fields(FakeMessage())))
    assert line.endswith("[sink] x stored topic=drift.events partition=2 offset=41")


def test_adapter_and_setup_route_records_as_json(capsys):
    setup_logging(load_settings(log_format="json"), "streams")
    try:
        for_message(logging.getLogger("streams.app"), FakeMessage()).warning("skipped %s", "it")
        err = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        logging.getLogger().handlers.clear()
    entry = json.loads(err)
    assert entry["msg"] == "skipped it" and entry["offset"] == 41 and entry["service"] == "streams"


# --- progress ------------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("mode", "stream", "shown"), [
    ("auto", io.StringIO(), False), ("auto", Tty(), True), ("on", io.StringIO(), True), ("off", Tty(), False)])  # fmt: skip
def test_progress_bars_show_on_a_terminal_or_when_asked(mode, stream, shown):
    with progress(total=10, desc="produce", unit="ev", mode=mode, stream=stream) as bar:
        bar.to(4)
        bar.to(3)  # never backwards
        bar.update(6)
        bar.note(alerts=2)
    assert bar.shown is shown and bar.count == 10
    out = stream.getvalue()
    assert ("10/10" in out and "produce" in out) if shown else out == ""


def test_progress_follows_the_settings():
    stream = io.StringIO()
    with progress(load_settings(progress="on"), total=2, stream=stream) as bar:
        bar.update(2)
    assert "2/2" in stream.getvalue()


def test_model_updates_count_stage_changes_promotions_rollbacks_and_the_canary_share():
    model = "metrics-rollout-model"
    before = value("driftwatch_rollout_stage_changes_total", model=model, stage="PROMOTED")
    metrics.observe_model_update({"model": model, "stage": "CANARY", "canary_fraction": 0.1})
    assert value("driftwatch_rollout_canary_fraction", model=model) == 0.1
    metrics.observe_model_update({"model": model, "stage": "PROMOTED", "canary_fraction": 0.0})
    metrics.observe_model_update({"model": model, "stage": "ROLLED_BACK", "canary_fraction": 0.0})
    assert value("driftwatch_rollout_stage_changes_total", model=model, stage="PROMOTED") == before + 1
    assert value("driftwatch_rollout_promotions_total", model=model) == 1
    assert value("driftwatch_rollout_rollbacks_total", model=model) == 1
    assert value("driftwatch_rollout_canary_fraction", model=model) == 0.0
