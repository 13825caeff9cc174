"""The router service's loop: requests acknowledged before commits, commits never past an alert
still waiting in a coalesce group, bad messages skipped. Fakes for Kafka, a real policy."""

from __future__ import annotations

from collections import deque

from consumers.router_service import RouterService
from retrain_jobs.dependency import plan
from schemas.codec import ALERT, RETRAIN_REQUEST, RETRAIN_RESULT
from schemas.settings import load_settings
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


class Msg:
    def __init__(self, topic, partition, offset, value):
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def error(self):
        return None


class FakeConsumer:
    def __init__(self, log):
        self.log, self.queue, self.commits = log, deque(), []

    def poll(self, timeout=None):
        return self.queue.popleft() if self.queue else None

    def commit(self, offsets, asynchronous=True):
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        self.log.append("commit")

    def close(self):
        pass


class FakeProducer:
    def __init__(self, log):
        self.log, self.pending, self.sent = log, [], []

    def produce(self, topic, key=None, value=None, on_delivery=None):
        self.pending.append((topic, key, value, on_delivery))

    def flush(self, timeout=None):
        for topic, key, value, cb in self.pending:
            self.sent.append((topic, key, RETRAIN_REQUEST.decode(value)))
            self.log.append("ack")
            cb(None, None)
        self.pending = []
        return 0


def service(clock):
    log: list = []
    consumer, producer = FakeConsumer(log), FakeProducer(log)
    svc = RouterService(
        SETTINGS, consumer=consumer, producer=producer, clock=lambda: clock[0], restore=False,
        planner=lambda model, alerts, tier, n: plan(None, alerts, tier=tier, n_slices_seen=n),
        end_offsets=lambda: {0: 5000, 1: 5000, 2: 5000},
    )  # fmt: skip
    return svc, consumer, producer, log


def test_requests_are_acknowledged_before_offsets_and_pending_alerts_hold_the_commit():
    clock = [1000.0]
    svc, consumer, producer, log = service(clock)
    consumer.queue.extend([
        Msg(T.alerts, 0, 7, ALERT.encode(full_alert(slice_="eu", n=1))),
        Msg(T.alerts, 0, 8, b"not an alert"),
    ])  # fmt: skip
    svc.step()
    svc.step()
    svc._commit(force=True)
    assert consumer.commits[-1] == {(T.alerts, 0): 7}, "the pending alert at offset 7 is not committed"
    assert svc.skipped == 1 and producer.sent == []

    clock[0] += 11
    svc._last_commit = -1e9
    svc.step()
    ((topic, key, req),) = producer.sent
    assert topic == T.retrain_requests and key == b"m" and req["slices"] == ["eu"] and req["tier"] == "ADAPTER"
    assert req["modules"] == ["adapter.eu"]
    assert log[-2:] == ["ack", "commit"] and consumer.commits[-1] == {(T.alerts, 0): 9}


def test_a_rejected_result_produces_the_escalation_before_its_offset_is_committed():
    clock = [1000.0]
    svc, consumer, producer, log = service(clock)
    consumer.queue.append(Msg(T.alerts, 1, 0, ALERT.encode(full_alert(slice_="us", partition=1))))
    svc.step()
    clock[0] += 11
    svc.step()
    (first,) = [r for _, _, r in producer.sent]
    rejected = {
        "request_id": first["request_id"], "model": "m", "new_version": None, "parent_version": "v1",
        "tier": "ADAPTER", "slices": ["us"], "modules_updated": ["adapter.us"], "params_updated": 5,
        "params_total": 50, "train_seconds": 0.1, "metric_name": "accuracy", "metric_before": 0.7,
        "metric_after": 0.69, "other_slices_max_regression": 0.0, "latency_ms": None, "decision": "REJECTED",
        "reason": "the slice did not improve", "artifact_uri": None, "finished_at": 0,
    }  # fmt: skip
    consumer.queue.append(Msg(T.retrain_results, 2, 4, RETRAIN_RESULT.encode(rejected)))
    svc._last_commit = -1e9
    svc.step()
    second = producer.sent[-1][2]
    assert second["tier"] == "MODULE" and second["alert_ids"] == first["alert_ids"]
    assert "encoder.amount" in second["modules"]
    assert log[-2:] == ["ack", "commit"] and consumer.commits[-1][(T.retrain_results, 2)] == 5
