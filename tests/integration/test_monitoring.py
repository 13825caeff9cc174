"""Monitoring while the services run: `driftctl query` and `driftctl report` through the sink's
query socket, Prometheus metrics of the running services, and direct access once they stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from deploy.broker import free_port
from deploy.produce import produce_events
from deploy.scenarios import Drift, Scenario
from deploy.services import settings_env, start_services
from runtime.topics import ensure_topics
from schemas.settings import Settings


def driftctl(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**settings_env(settings), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def query_json(settings: Settings, sql: str) -> list[dict]:
    result = driftctl(settings, "query", "--format", "json", sql)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            samples[name] = float(number)
    return samples


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


@pytest.fixture(scope="module")
def running(kafka_settings: Settings, tmp_path_factory):
    """streams + sink as `driftctl run` starts them, on a held-out drift scenario."""
    run_dir = tmp_path_factory.mktemp("mon")
    tag = f"{kafka_settings.topic_prefix}-mon"
    settings = kafka_settings.model_copy(update={
        "topic_prefix": tag,  # own topics: this story's events stay out of the other tests' streams
        "app_id": f"{tag}-streams", "sink_group": f"{tag}-sink",
        "run_dir": run_dir, "metrics_port": free_port(), "kafka_stats_interval_ms": 1000, "log_format": "json",
        "stats_every_events": 200,
    })  # fmt: skip
    ensure_topics(settings)
    group = start_services(settings, ("streams", "sink"), log_dir=run_dir / "logs")
    scenario = Scenario(events_per_slice=2000, drifts=(Drift("us-east", "amount", 1000, size=2.5),))
    assert produce_events(settings, scenario.events()) == scenario.total_events
    yield settings, group, scenario
    codes = group.stop()
    assert codes == {"streams": 0, "sink": 0}, (codes, (run_dir / "logs" / "sink.log").read_text()[-3000:])


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def test_query_answers_through_the_socket_while_the_sink_runs(running):
    settings, group, scenario = running
    wait_for(lambda: settings.run_dir.joinpath("clickhouse.sock").is_socket(), 60, "the sink's query socket")
    alerts = wait_for(lambda: query_json(settings, "SELECT slice, feature, alert_type, count() AS n "
                                                   "FROM drift_alerts FINAL GROUP BY slice, feature, alert_type"),
                      150, "an alert in drift_alerts")  # fmt: skip
    assert ("us-east", "amount") in {(a["slice"], a["feature"]) for a in alerts}
    stats = query_json(settings, "SELECT slice, count() AS n, max(drift_score) AS top FROM drift_stats GROUP BY slice")
    assert {s["slice"] for s in stats} >= {"us-east", "eu-west"} and all(s["n"] > 0 for s in stats)
    drifting = json.loads(driftctl(settings, "query", "--format", "json", "--named", "drifting-now").stdout)
    us = {(d["slice"], d["feature"]): d for d in drifting}["us-east", "amount"]
    onset = datetime.fromtimestamp(scenario.event_time("us-east", 1000) / 1000, UTC).replace(tzinfo=None)
    since, first = datetime.fromisoformat(us["since"]), datetime.fromisoformat(us["first_alert"])
    [window] = query_json(settings, "SELECT min(window_start_event_time) AS t FROM drift_alerts "
                                    "WHERE slice = 'us-east' AND feature = 'amount'")  # fmt: skip
    start = datetime.fromisoformat(window["t"])
    # since estimates the change point inside the alert's window: nearer the onset than the window start
    assert start <= since <= first and abs(since - onset) < abs(start - onset), (start, since, onset, first)
    refused = driftctl(settings, "query", "DROP TABLE drift_alerts")
    assert refused.returncode == 2 and "read-only" in refused.stderr
    assert all(group.alive().values()), "a service died while being queried"


def test_report_renders_from_the_running_system(running, tmp_path):
    settings, _, _ = running
    wait_for(lambda: query_json(settings, "SELECT count() AS n FROM drift_alerts")[0]["n"], 150, "alerts")
    out = tmp_path / "report.html"
    result = driftctl(settings, "report", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "query socket" in summary["source"] and summary["bytes"] == out.stat().st_size
    assert summary["plots"] >= 3 and summary["rows"]["drift-timeline"] > 0  # timeline, alerts by type, by hour
    page = out.read_text()
    assert 'id="plot-drift-timeline"' in page and "us-east" in page
    assert "No retraining yet" in page  # only streams and sink run here: the explicit empty panel


def test_services_expose_prometheus_metrics(running):
    settings, _, _ = running
    streams_port, sink_port = settings.metrics_port, settings.metrics_port + 1
    wait_for(lambda: total(scrape(streams_port), "driftwatch_events_total") >= 1000, 120, "events counted")
    streams = scrape(streams_port)
    assert total(streams, 'driftwatch_alerts_total{alert_type="DATA_DRIFT"') >= 1
    assert total(streams, "driftwatch_stats_total") > 0
    def lag_reported():  # gauges per assigned partition (0 once caught up)
        samples = scrape(sink_port)
        lags = [k for k in samples if k.startswith("driftwatch_consumer_lag{") and settings.topics.alerts in k]
        return samples if lags else None

    sink = wait_for(lag_reported, 60, "consumer lag from librdkafka statistics")
    assert total(sink, 'driftwatch_sink_rows_total{table="drift_stats"}') > 0
    assert total(sink, "driftwatch_query_requests_total") >= 1


def test_logs_are_json_lines(running):
    settings, _, _ = running
    lines = (settings.run_dir / "logs" / "sink.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries and all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    assert any(e.get("service") == "sink" and "read-only SQL" in e["msg"] for e in entries)


def test_after_the_services_stop_the_store_opens_directly(running):
    settings, group, _ = running
    assert query_json(settings, "SELECT count() AS n FROM drift_alerts FINAL")[0]["n"] >= 1
    group.stop()
    assert not settings.run_dir.joinpath("clickhouse.sock").exists()
    rows = query_json(settings, "SELECT count() AS n FROM drift_alerts FINAL")
    assert rows[0]["n"] >= 1
    assert os.path.exists(settings.run_dir / "clickhouse")
