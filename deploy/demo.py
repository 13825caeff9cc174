"""``driftctl demo``: synthetic events with one injected shift, end to end, with a summary."""

from __future__ import annotations

import sys
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from deploy.kafka_util import end_offsets, wait_caught_up
from deploy.scenarios import Drift, Scenario
from schemas.codec import ALERT
from schemas.settings import Settings


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(total: int):
    finished = False

    def show(n: int) -> None:
        nonlocal finished
        if finished:
            return
        width = 30
        done = int(width * n / total) if total else width
        end = "\n" if n >= total else ""
        finished = n >= total
        sys.stderr.write(f"\r  produced [{'#' * done}{'.' * (width - done)}] {n}/{total}{end}")
        sys.stderr.flush()

    return show


def collect_alerts(settings: Settings, start: dict[int, int], until, timeout: float) -> list[dict[str, Any]]:
    """Alerts written after ``start`` offsets, until ``until(alerts)`` holds or timeout."""
    topic = settings.topics.alerts
    c = Consumer(settings.confluent_config(**{"group.id": "driftctl-demo", "enable.auto.commit": False}))
    c.assign([TopicPartition(topic, p, off) for p, off in start.items()])
    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(alerts):
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            alerts.append(ALERT.decode(msg.value()))
    finally:
        c.close()
    return alerts


def run_demo(settings: Settings, events_per_slice: int = 3000, timeout: float = 180.0) -> int:
    from consumers.store import open_clickhouse, query
    from deploy.broker import LocalBroker
    from deploy.services import start_services
    from deploy.topics_admin import ensure_topics

    t0 = time.monotonic()
    scenario = Scenario(events_per_slice=events_per_slice, drifts=(Drift("eu-west", "amount", events_per_slice // 2),))
    target = scenario.drifts[0]
    _say(f"[1/5] Kafka broker at {settings.kafka_bootstrap}")
    broker = LocalBroker(settings)
    started_broker = not broker.status().get("running")
    broker.up()
    ensure_topics(settings)
    alert_start = end_offsets(settings, settings.topics.alerts)

    _say("[2/5] starting services: streams (river detectors per slice x feature), sink (ClickHouse)")
    services = start_services(settings, log_dir=settings.run_dir / "logs")
    code = 1
    try:
        _say(
            f"[3/5] producing {scenario.total_events} events: {len(scenario.slices)} slices x "
            f"{len(scenario.features)} features; shift of +{target.size:g} sd in {target.slice}/{target.feature} "
            f"from its event {target.start}"
        )
        from deploy.produce import produce_events

        produce_events(settings, scenario.events(), _progress(scenario.total_events))

        _say("[4/5] waiting for the drift alert on " + settings.topics.alerts)

        def found(alerts: list[dict[str, Any]]) -> bool:
            return any(a["slice"] == target.slice and a["feature"] == target.feature for a in alerts)

        alerts = collect_alerts(settings, alert_start, found, timeout)
        for a in alerts:
            _say(
                f"  ALERT {a['alert_type']} {a['severity']} {a['model']}/{a['slice']}/{a['feature']} "
                f"by {a['detector']}: mean {a['reference']['mean']:.2f} -> {a['current']['mean']:.2f}, "
                f"offsets {a['partition']}:{a['first_offset']}-{a['last_offset']}"
            )
        if not found(alerts):
            _say(f"  no alert on {target.slice}/{target.feature} within {timeout:.0f}s; see {settings.run_dir}/logs")
            return 1
        caught_up = wait_caught_up(settings, settings.sink_group, settings.topics.alerts, timeout=60)
        if not caught_up:
            _say("  the sink did not commit the alerts within 60s; see the sink log")
            return 1
        code = 0
    finally:
        services.stop()
        if code != 0 and started_broker:
            broker.down()

    _say("[5/5] ClickHouse summary")
    client = open_clickhouse(settings)
    cols, rows = query(
        client,
        "SELECT slice, feature, alert_type, count() AS alerts, max(window_end_event_time) AS last_window_end "
        "FROM drift_alerts FINAL GROUP BY slice, feature, alert_type ORDER BY slice, feature",
    )
    from deploy.cli import write_rows

    write_rows(cols, rows, "table", sys.stdout)
    _, stat_rows = query(client, "SELECT count() FROM drift_stats FINAL")
    _say(f"  drift_stats rows: {stat_rows[0][0]}")
    if started_broker:
        broker.down()
        _say("  (broker stopped: the demo started it; `driftctl up` keeps one running)")
    _say(f"demo done in {time.monotonic() - t0:.1f}s; try: driftctl query --format json \"SELECT count() AS n FROM drift_alerts\"")
    return code
