"""Prometheus metrics of the services: the counters every service shares, and the endpoint.

Each service process serves ``/metrics`` on its own port: ``DRIFT_METRICS_PORT`` for the
first service and the next ports for the others, in :data:`SERVICE_PORT_OFFSETS` order
(``0`` turns the endpoints off); ``driftctl run`` puts further workers of a service
(``--workers``) and its own endpoint (restarts) on the ports after those. Metric objects live here, module level, so any service
increments them with one line, e.g. ``metrics.RETRAIN_JOBS.labels(model, tier, decision).inc()``
or the ``observe_*`` helpers. Names (Prometheus adds ``_total`` to counters):

==========================================  ==========================================================
driftwatch_events_total{topic}              events the streams worker processed (rate() = events/s)
driftwatch_stats_total                      DriftStat records emitted
driftwatch_alerts_total{alert_type,severity}  alerts emitted by the streams worker
driftwatch_dead_letters_total{service}      messages dead-lettered (streams: to the DLQ; sink: undecodable)
driftwatch_consumer_lag{client,topic,partition}  messages behind the high watermark (librdkafka statistics)
driftwatch_sink_rows_total{table}           rows the sink inserted into ClickHouse
driftwatch_sink_insert_failures_total       failed ClickHouse inserts (the batch is retried)
driftwatch_retrain_requests_total{model,tier}  retrain requests sent by the policy router
driftwatch_retrain_jobs_total{model,tier,decision}  retrain jobs finished (PROMOTED, REJECTED, ROLLED_BACK)
driftwatch_retrain_train_seconds{tier}      histogram of training time per job
driftwatch_retrain_params_updated_total     parameters trained by the jobs; over driftwatch_retrain_params_total
driftwatch_retrain_params_total             (parameters of the models they updated) the share retraining touched
driftwatch_query_requests_total{outcome}    SQL answered on the query socket (ok, refused, query, request)
driftwatch_rollout_stage_changes_total{model,stage}  ModelUpdate records the rollout service published
driftwatch_rollout_events_total{model}      paired labelled events the rollouts scored
driftwatch_rollouts_active                  rollouts in shadow, canary or watch
driftwatch_rollout_promotions_total{model}  candidates promoted after shadow and canary
driftwatch_rollout_rollbacks_total{model}   versions rolled back by the watch (or by hand)
driftwatch_rollout_canary_fraction{model}   share of the slices' events the candidate serves now (0 off canary)
driftwatch_serving_predictions_total{model,version}  predictions made by serving handles in this process
driftwatch_service_restarts_total{service,worker}  dead services ``driftctl run`` restarted (its own endpoint)
driftwatch_service_up{service,worker}       1 while the supervised process runs, 0 while it waits for a restart
==========================================  ==========================================================
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from schemas.codec import ALERT
from schemas.settings import Settings

log = logging.getLogger(__name__)

SERVICE_PORT_OFFSETS = {"streams": 0, "sink": 1, "router": 2, "retrain": 3, "rollout": 4}

EVENTS = Counter("driftwatch_events", "Events the streams worker processed", ["topic"])
STATS = Counter("driftwatch_stats", "DriftStat records emitted by the streams worker")
ALERTS = Counter("driftwatch_alerts", "Alerts emitted by the streams worker", ["alert_type", "severity"])
DEAD_LETTERS = Counter("driftwatch_dead_letters", "Messages dead-lettered", ["service"])
CONSUMER_LAG = Gauge(
    "driftwatch_consumer_lag", "Messages behind the partition's high watermark", ["client", "topic", "partition"]
)
SINK_ROWS = Counter("driftwatch_sink_rows", "Rows the sink inserted into ClickHouse", ["table"])
SINK_INSERT_FAILURES = Counter("driftwatch_sink_insert_failures", "Failed ClickHouse inserts (batch retried)")
RETRAIN_REQUESTS = Counter("driftwatch_retrain_requests", "Retrain requests sent by the router", ["model", "tier"])
RETRAIN_JOBS = Counter("driftwatch_retrain_jobs", "Retrain jobs finished", ["model", "tier", "decision"])
RETRAIN_SECONDS = Histogram(
    "driftwatch_retrain_train_seconds", "Training time per retrain job", ["tier"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)  # fmt: skip
RETRAIN_PARAMS_UPDATED = Counter("driftwatch_retrain_params_updated", "Parameters trained by retrain jobs")
RETRAIN_PARAMS_TOTAL = Counter("driftwatch_retrain_params_total", "Parameters of the models retrain jobs touched")
QUERY_REQUESTS = Counter("driftwatch_query_requests", "SQL requests on the query socket", ["outcome"])
SERVICE_RESTARTS = Counter("driftwatch_service_restarts", "Dead services restarted by driftctl run", ["service", "worker"])
SERVICE_UP = Gauge("driftwatch_service_up", "1 while a supervised service process runs", ["service", "worker"])
ROLLOUT_STAGES = Counter("driftwatch_rollout_stage_changes", "Rollout stage changes published", ["model", "stage"])
ROLLOUT_PROMOTIONS = Counter("driftwatch_rollout_promotions", "Candidates promoted by the rollout", ["model"])
ROLLOUT_ROLLBACKS = Counter("driftwatch_rollout_rollbacks", "Versions rolled back", ["model"])
ROLLOUT_CANARY_FRACTION = Gauge(
    "driftwatch_rollout_canary_fraction", "Share of the slices' events the canary candidate serves", ["model"]
)
SERVING_PREDICTIONS = Counter(
    "driftwatch_serving_predictions", "Predictions made by serving handles", ["model", "version"]
)


def service_port(settings: Settings, service: str) -> int | None:
    """The metrics port of a service, or None when metrics are off."""
    if not settings.metrics_port:
        return None
    offset = SERVICE_PORT_OFFSETS.get(service, len(SERVICE_PORT_OFFSETS))
    return settings.metrics_port + offset


def start_metrics(settings: Settings, service: str, port: int | None = None) -> int | None:
    """Serve /metrics for this process (on ``port``, default :func:`service_port`); a busy port is
    logged, never fatal (metrics are optional)."""
    port = port if port is not None and settings.metrics_port else service_port(settings, service)
    if port is None:
        return None
    try:
        start_http_server(port, addr=settings.metrics_host)
    except OSError as exc:
        log.warning("metrics for %s not served on %s:%d: %s", service, settings.metrics_host, port, exc)
        return None
    log.info("metrics for %s on http://%s:%d/metrics", service, settings.metrics_host, port)
    return port


# --------------------------------------------------------------------------------------
# librdkafka statistics -> consumer lag
# --------------------------------------------------------------------------------------


def record_kafka_stats(stats_json: str) -> int:
    """Set the lag gauges from one librdkafka statistics JSON; returns partitions seen.

    Uses ``consumer_lag_stored`` (behind the offset we stored/committed, which is what a
    restart replays), falling back to ``consumer_lag``; -1 (unknown) is skipped.
    """
    try:
        stats = json.loads(stats_json)
    except ValueError:
        return 0
    client = str(stats.get("client_id") or stats.get("name") or "")
    seen = 0
    for topic, t in (stats.get("topics") or {}).items():
        for pid, p in (t.get("partitions") or {}).items():
            if pid == "-1":  # librdkafka's internal UA partition
                continue
            lag = p.get("consumer_lag_stored", -1)
            if lag is None or lag < 0:
                lag = p.get("consumer_lag", -1)
            if lag is None or lag < 0:
                continue
            CONSUMER_LAG.labels(client, topic, pid).set(lag)
            seen += 1
    return seen


def stats_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties that turn on statistics and feed them to the lag gauges."""
    if not settings.kafka_stats_interval_ms:
        return {}
    return {"statistics.interval.ms": settings.kafka_stats_interval_ms, "stats_cb": record_kafka_stats}


# --------------------------------------------------------------------------------------
# Helpers for the services
# --------------------------------------------------------------------------------------


def observe_streams(out: Any, events: int, topic: str) -> None:
    """Count one processed batch of the streams worker (``out``: its Outgoing records)."""
    EVENTS.labels(topic).inc(events)
    if out.stats:
        STATS.inc(len(out.stats))
    if out.dead_letters:
        DEAD_LETTERS.labels("streams").inc(len(out.dead_letters))
    for _key, value in out.alerts:  # alerts are rare: decoding them for labels is cheap
        alert = ALERT.decode(value)
        ALERTS.labels(alert["alert_type"], alert["severity"]).inc()


def observe_retrain_request(request: dict[str, Any]) -> None:
    RETRAIN_REQUESTS.labels(request["model"], request["tier"]).inc()


def observe_retrain_result(result: dict[str, Any]) -> None:
    """Count one finished retrain job from its RetrainResult record."""
    RETRAIN_JOBS.labels(result["model"], result["tier"], result["decision"]).inc()
    RETRAIN_SECONDS.labels(result["tier"]).observe(result["train_seconds"])
    RETRAIN_PARAMS_UPDATED.inc(result["params_updated"])
    RETRAIN_PARAMS_TOTAL.inc(result["params_total"])


ROLLOUT_EVENTS = Counter("driftwatch_rollout_events", "Paired labelled events scored by the rollouts", ["model"])
ROLLOUTS_ACTIVE = Gauge("driftwatch_rollouts_active", "Rollouts in shadow, canary or watch")


def observe_model_update(update: dict[str, Any]) -> None:
    """Count one published ModelUpdate (the rollout service calls this after producing it)."""
    model, stage = update["model"], update["stage"]
    ROLLOUT_STAGES.labels(model, stage).inc()
    if stage == "PROMOTED":
        ROLLOUT_PROMOTIONS.labels(model).inc()
    elif stage == "ROLLED_BACK":
        ROLLOUT_ROLLBACKS.labels(model).inc()
    share = (update.get("canary_fraction") or 0.0) if stage == "CANARY" else 0.0
    ROLLOUT_CANARY_FRACTION.labels(model).set(share)
