"""The retrain worker's loop: commit only after the result is acknowledged, bad requests become
REJECTED results, transient failures publish nothing. Small fakes stand in for Kafka and the job."""

from __future__ import annotations

import math
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import REGISTRY

from retrain_jobs.worker import RetrainWorker, failed_result
from schemas.codec import RETRAIN_REQUEST, RETRAIN_RESULT
from schemas.errors import DriftError, InfraError
from schemas.retraining import Cause
from schemas.settings import load_settings
from tests.fakes import FakeConsumer, FakeMessage, FakeProducer

SETTINGS = load_settings(topic_prefix="tw")
REQUESTS = SETTINGS.topics.retrain_requests
RESULTS = SETTINGS.topics.retrain_results


def request_msg(offset, value, partition=0, key=b"m"):
    return FakeMessage(REQUESTS, partition, offset, value, key=key)


def request(rid="r1", model="m"):
    return {
        "schema_version": 1, "request_id": rid, "alert_ids": ["a1"], "model": model, "slices": ["eu"],
        "modules": ["adapter.eu"], "tier": "ADAPTER",
        "snapshot": {"topic": "tw.events", "ranges": [{"partition": 0, "start_offset": 0, "end_offset": 10}],
                     "slice_filter": ["eu"], "labelled_only": True},
        "priority": 2100, "policy_version": "router-1", "created_at": 1,
    }  # fmt: skip


def good_result(req, events):
    return {**failed_result(req, "x"), "decision": "PROMOTED", "cause": "GATE_PASSED",
            "reason": f"improved on {len(events)} events",
            "params_updated": 10, "params_total": 100, "metric_name": "accuracy", "metric_before": 0.6,
            "metric_after": 0.8, "other_slices_max_regression": 0.0, "new_version": "v2"}  # fmt: skip


def worker(messages, *, run_job=None, read_snapshot=None, fail_publish=0):
    events: list = []
    consumer = FakeConsumer(messages, on_commit=lambda offsets: events.append(("commit", offsets[0].offset)))
    producer = FakeProducer(
        RETRAIN_RESULT, fail=fail_publish, on_ack=lambda result: events.append(("ack", result["request_id"]))
    )

    def default_read(settings, snap):
        events.append(("read", snap["topic"]))
        return [{"slice": "eu", "label": 1}] * 3

    def default_job(req, evs, registry, settings):
        events.append(("job", req["request_id"]))
        return good_result(req, evs)

    w = RetrainWorker(SETTINGS, consumer=consumer, producer=producer, read_snapshot=read_snapshot or default_read,
                      run_job=run_job or default_job, registry=object())  # fmt: skip
    return w, consumer, producer, events


def blocked_job(release: threading.Event):
    """A job that runs until ``release`` is set (5 s at most), then succeeds."""

    def job(req, evs, registry, settings):
        release.wait(5)
        return good_result(req, evs)

    return job


def drive(w, until, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        w.step()
    assert until(), "condition not reached"


def test_result_is_published_and_acknowledged_before_the_commit():
    w, consumer, producer, events = worker([request_msg(5, RETRAIN_REQUEST.encode(request("r1")))])
    counted = ("driftwatch_retrain_jobs_total", {"model": "m", "tier": "ADAPTER", "decision": "PROMOTED"})
    before = REGISTRY.get_sample_value(*counted) or 0.0
    drive(w, lambda: consumer.commits)
    assert REGISTRY.get_sample_value(*counted) - before == 1, "a published result is counted"
    assert [e[0] for e in events] == ["read", "job", "ack", "commit"]
    assert consumer.commits == [[(REQUESTS, 0, 6)]]
    ((topic, key, res),) = producer.delivered
    assert topic == RESULTS and key == b"m" and res["decision"] == "PROMOTED" and res["request_id"] == "r1"
    assert not consumer.paused, "partitions resumed after the job"


def test_no_commit_while_the_result_is_not_acknowledged_then_retry():
    w, consumer, producer, events = worker([request_msg(0, RETRAIN_REQUEST.encode(request()))], fail_publish=1)
    w.step()
    drive(w, lambda: w.stats.retries == 1)
    assert consumer.commits == [] and producer.delivered == []
    assert consumer.paused, "no new request is taken while one waits to be published"
    w._retry_at = time.monotonic()  # skip the backoff
    drive(w, lambda: consumer.commits)
    assert [e[0] for e in events].count("job") == 1, "the computed result is re-published, not recomputed"
    assert consumer.commits == [[(REQUESTS, 0, 1)]]


def test_a_job_error_becomes_a_rejected_result_and_the_worker_goes_on():
    def broken_job(req, evs, registry, settings):
        if req["request_id"] == "bad":
            raise DriftError("model 'm' has no labelled events in slice eu")
        return good_result(req, evs)

    w, consumer, producer, _events = worker(
        [request_msg(0, RETRAIN_REQUEST.encode(request("bad"))), request_msg(1, RETRAIN_REQUEST.encode(request("good")))],
        run_job=broken_job,
    )
    drive(w, lambda: len(consumer.commits) == 2)
    bad, good = (r for _, _, r in producer.delivered)
    assert bad["decision"] == "REJECTED" and bad["cause"] == Cause.JOB_FAILED
    assert "no labelled events" in bad["reason"] and bad["slices"] == ["eu"] and bad["tier"] == "ADAPTER"
    assert math.isnan(bad["metric_before"]) and bad["params_updated"] == 0
    assert good["decision"] == "PROMOTED"
    assert consumer.commits == [[(REQUESTS, 0, 1)], [(REQUESTS, 0, 2)]]
    assert w.stats.failed == 1 and w.stats.published == {"REJECTED": 1, "PROMOTED": 1}


def test_an_undecodable_request_is_rejected_with_its_position():
    w, consumer, producer, events = worker([request_msg(3, b"\x00garbage", key=b"m")])
    drive(w, lambda: consumer.commits)
    ((_, _key, res),) = producer.delivered
    assert res["decision"] == "REJECTED" and res["model"] == "m"
    assert res["request_id"] == f"undecodable:{REQUESTS}[0]@3"
    assert "read" not in [e[0] for e in events]


def test_infra_error_publishes_nothing_and_retries_the_same_request():
    calls = []

    def flaky_read(settings, snap):
        calls.append(1)
        if len(calls) == 1:
            raise InfraError("broker unreachable")
        return [{"slice": "eu"}]

    w, consumer, producer, _events = worker([request_msg(0, RETRAIN_REQUEST.encode(request()))], read_snapshot=flaky_read)
    drive(w, lambda: w.stats.retries == 1)
    assert producer.delivered == [] and consumer.commits == []
    w._retry_at = time.monotonic()
    drive(w, lambda: consumer.commits)
    assert len(calls) == 2 and producer.delivered[0][2]["decision"] == "PROMOTED"


def test_retriable_kafka_errors_are_transient_others_reject():
    from retrain_jobs.worker import transient

    assert transient(InfraError("x"))
    assert transient(KafkaException(KafkaError(KafkaError._TRANSPORT, "down", retriable=True)))
    assert not transient(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "gone")))
    assert not transient(ValueError("bad"))


def test_a_crash_mid_job_publishes_and_commits_nothing():
    class Crash(BaseException):  # stands for the process dying (not an error the worker handles)
        pass

    def dying_job(req, evs, registry, settings):
        raise Crash()

    w, consumer, producer, _events = worker([request_msg(0, RETRAIN_REQUEST.encode(request()))], run_job=dying_job)
    with pytest.raises(Crash):
        drive(w, lambda: False, timeout=5)
    assert producer.delivered == [] and consumer.commits == []


def test_the_group_stays_alive_while_a_long_job_runs():
    release = threading.Event()
    polls = []
    w, consumer, _producer, _events = worker(
        [request_msg(0, RETRAIN_REQUEST.encode(request()))], run_job=blocked_job(release)
    )
    original_poll = consumer.poll
    consumer.poll = lambda timeout=None: polls.append(timeout) or original_poll(timeout)
    for _ in range(5):
        w.step()
    assert len(polls) == 5 and consumer.paused and consumer.commits == []
    release.set()
    drive(w, lambda: consumer.commits)


def test_stop_finishes_the_running_job_first():
    release = threading.Event()
    w, consumer, _producer, _events = worker(
        [request_msg(0, RETRAIN_REQUEST.encode(request()))], run_job=blocked_job(release)
    )
    w.step()
    stop = threading.Event()
    stop.set()
    threading.Timer(0.3, release.set).start()
    w.run(stop)
    assert consumer.commits == [[(REQUESTS, 0, 1)]] and consumer.closed


def test_a_fatal_consumer_error_stops_the_worker():
    fatal = FakeMessage(REQUESTS, 0, 0, None, error=KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    w, _consumer, _producer, _events = worker([fatal])
    with pytest.raises(KafkaException):
        w.step()


def test_a_hung_job_stops_the_worker_without_publishing():
    from retrain_jobs.worker import HungJobError

    release = threading.Event()
    w, consumer, producer, _events = worker(
        [request_msg(0, RETRAIN_REQUEST.encode(request()))], run_job=blocked_job(release)
    )
    w.settings = w.settings.model_copy(update={"retrain_max_job_seconds": 10})
    w.step()
    w.job.started -= 11
    with pytest.raises(HungJobError):
        w.step()
    w.close()  # returns at once although the job's thread still runs
    release.set()
    assert producer.delivered == [] and consumer.commits == []


def test_the_real_worker_bootstraps_a_new_model_on_data_from_before_the_onset(tmp_path, monkeypatch):
    """No `driftctl train`: the first request's model is fitted on the oldest events, cut at the
    request's onset on every partition, so what the other slices did after it stays out."""
    from retrain_jobs import snapshot as snapshot_mod
    from retrain_jobs.registry import Registry
    from retrain_jobs.scenario import RetrainScenario
    from retrain_jobs.worker import bootstrap_from_reference

    pre, post = RetrainScenario(n_slices=3, pre_events=300, post_events=300, drifted="s1", seed=5, model="m").events()
    onset = min(e["event_time"] for e in post if e["slice"] == "s1")
    reads = []

    def read(settings, snap):  # the topic holds every event; the request's snapshot starts at the onset
        keep = snapshot_mod.snapshot_filter(snap)
        got = [e for e in (pre + post if "before_event_time" in snap else post) if keep(e)]
        reads.append((snap, got))
        return got

    monkeypatch.setattr(snapshot_mod, "reference_snapshot",
                        lambda settings, snap, n, before_event_time=None: {**snap, "before_event_time": before_event_time})
    settings = load_settings(topic_prefix="tw", registry_dir=tmp_path, retrain_bootstrap_epochs=8, retrain_epochs=25,
                             rollout_enabled=False)
    registry = Registry(tmp_path)
    req = {**request("r1"), "slices": ["s1"], "modules": ["adapter.s1"]}
    w = RetrainWorker(settings, consumer=FakeConsumer([]), producer=FakeProducer(RETRAIN_RESULT), read_snapshot=read,
                      registry=registry)  # fmt: skip
    assert w.bootstrap is bootstrap_from_reference, "the real job comes with the reference bootstrap"
    result = w.compute(req)
    (_, snapshot_events), (reference, reference_events) = reads
    assert reference["before_event_time"] == onset and reference_events
    assert max(e["event_time"] for e in reference_events) < onset == min(
        e["event_time"] for e in snapshot_events if e["slice"] == "s1")
    boot = registry.manifest("m", "v0001")
    assert boot.snapshot["before_event_time"] == onset and "adapter.s1" in boot.modules  # s1's old concept
    assert result["decision"] == "PROMOTED" and result["metric_before"] - result["metric_after"] > 0.05, result
    assert RetrainWorker(SETTINGS, consumer=FakeConsumer([]), producer=FakeProducer(RETRAIN_RESULT),
                         run_job=lambda *a: {}, registry=object()).bootstrap is None  # an injected job decides alone
