"""The router service's loop: requests acknowledged before commits, commits never past an alert
still waiting in a coalesce group, bad messages skipped. Fakes for Kafka, a real policy."""

from __future__ import annotations

from prometheus_client import REGISTRY

from consumers.router_service import RouterService
from retrain_jobs.dependency import plan
from schemas.codec import ALERT, RETRAIN_REQUEST, RETRAIN_RESULT
from schemas.settings import load_settings
from tests.fakes import FakeConsumer, FakeMessage, FakeProducer, commit_dict
from tests.unit.test_router import alert

SETTINGS = load_settings(topic_prefix="ts", router_coalesce_seconds=10, router_min_post_alert_events=0)
T = SETTINGS.topics


def full_alert(**kw):
    a = alert(**kw)
    return {
        **a, "schema_version": 1, "detector": "adwin", "detector_params": {}, "statistic": 1.0, "threshold": 0.5,
        "confidence": 0.99, "reference": a["current"], "topic": T.events, "worker_id": "w", "app_version": "0",
        "detected_at": 0,
    }  # fmt: skip


def service(clock):
    log: list = []
    consumer = FakeConsumer(on_commit=lambda offsets: log.append("commit"))
    producer = FakeProducer(RETRAIN_REQUEST, on_ack=lambda request: log.append("ack"))
    svc = RouterService(
        SETTINGS, consumer=consumer, producer=producer, clock=lambda: clock[0], restore=False,
        planner=lambda model, alerts, tier, n: plan(None, alerts, tier=tier, n_slices_seen=n),
        end_offsets=lambda: {0: 5000, 1: 5000, 2: 5000},
    )  # fmt: skip
    return svc, consumer, producer, log


def test_requests_are_acknowledged_before_offsets_and_pending_alerts_hold_the_commit():
    clock = [1000.0]
    svc, consumer, producer, log = service(clock)
    consumer.feed(
        FakeMessage(T.alerts, 0, 7, ALERT.encode(full_alert(slice_="eu", n=1))),
        FakeMessage(T.alerts, 0, 8, b"not an alert"),
    )
    svc.step()
    svc.step()
    svc._commit(force=True)
    assert commit_dict(consumer.commits[-1]) == {(T.alerts, 0): 7}, "the pending alert at offset 7 is not committed"
    assert svc.skipped == 1 and producer.delivered == []

    clock[0] += 11
    svc._last_commit = -1e9
    counted = ("driftwatch_retrain_requests_total", {"model": "m", "tier": "ADAPTER"})
    before = REGISTRY.get_sample_value(*counted) or 0.0
    svc.step()
    assert REGISTRY.get_sample_value(*counted) - before == 1, "an acknowledged request is counted"
    ((topic, key, req),) = producer.delivered
    assert topic == T.retrain_requests and key == b"m/eu" and req["slices"] == ["eu"] and req["tier"] == "ADAPTER"
    assert req["modules"] == ["adapter.eu"]
    assert log[-2:] == ["ack", "commit"] and commit_dict(consumer.commits[-1]) == {(T.alerts, 0): 9}


def test_a_rejected_result_produces_the_escalation_before_its_offset_is_committed():
    clock = [1000.0]
    svc, consumer, producer, log = service(clock)
    consumer.feed(FakeMessage(T.alerts, 1, 0, ALERT.encode(full_alert(slice_="us", partition=1))))
    svc.step()
    clock[0] += 11
    svc.step()
    (first,) = [r for _, _, r in producer.delivered]
    rejected = {
        "request_id": first["request_id"], "model": "m", "new_version": None, "parent_version": "v1",
        "tier": "ADAPTER", "slices": ["us"], "modules_updated": ["adapter.us"], "params_updated": 5,
        "params_total": 50, "train_seconds": 0.1, "metric_name": "accuracy", "metric_before": 0.7,
        "metric_after": 0.69, "other_slices_max_regression": 0.0, "latency_ms": None, "decision": "REJECTED",
        "reason": "the slice did not improve", "artifact_uri": None, "finished_at": 0, "cause": "MIN_GAIN",
    }  # fmt: skip
    consumer.feed(FakeMessage(T.retrain_results, 2, 4, RETRAIN_RESULT.encode(rejected)))
    svc._last_commit = -1e9
    svc.step()
    second = producer.delivered[-1][2]
    assert second["tier"] == "MODULE" and second["alert_ids"] == first["alert_ids"]
    assert "encoder.amount" in second["modules"]
    assert log[-2:] == ["ack", "commit"] and commit_dict(consumer.commits[-1])[(T.retrain_results, 2)] == 5
