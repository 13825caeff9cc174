"""Issue 4's done-criterion, end to end on a real broker and the real ClickHouse engine.

Exactly the user's flow: ``driftctl run`` (streams, router, retrain, sink as child processes)
and ``driftctl produce --file`` of labelled events where two slices' concepts change and three
stay stable, with no ``driftctl train`` step: the first job bootstraps the model. Then, after
the services stopped: retrain_results has rows for exactly the drifted slices, none updating
every parameter, and alert -> request -> result joins in ClickHouse.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from consumers.store import close_clickhouse, open_clickhouse, query
from deploy.demo_story import RetrainStory
from deploy.services import settings_env
from runtime.kafka import wait_caught_up
from runtime.topics import ensure_topics
from schemas.codec import RETRAIN_REQUEST, RETRAIN_RESULT
from schemas.settings import Settings

STORY = RetrainStory(model="it-model")


def read_topic(settings: Settings, topic: str, decode) -> list[dict]:
    """Everything currently in ``topic``, decoded."""
    c = Consumer(settings.confluent_config(**{"group.id": f"t-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out, deadline = [], time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(decode(msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        return out
    finally:
        c.close()


def driftctl(settings: Settings, *args: str, log=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", *args], env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT
    )


def produce_and_wait(settings: Settings, events_file, services: subprocess.Popen, tmp) -> tuple[list, list]:
    """`driftctl produce --file`, then wait until every request has its result and the sink stored them."""
    produce = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "produce", "--file", str(events_file)],
        env=settings_env(settings), capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert produce.returncode == 0, produce.stderr.decode()
    deadline = time.monotonic() + 300
    requests, results, settled_at = [], [], None
    while time.monotonic() < deadline:
        assert services.poll() is None, f"driftctl run exited; see {tmp / 'driftctl-run.log'}"
        requests = read_topic(settings, settings.topics.retrain_requests, RETRAIN_REQUEST.decode)
        results = read_topic(settings, settings.topics.retrain_results, RETRAIN_RESULT.decode)
        covered = {s for r in results for s in r["slices"]}
        done = {r["request_id"] for r in results} >= {q["request_id"] for q in requests}
        if covered >= set(STORY.drifted) and done:
            settled_at = settled_at or time.monotonic()
            if time.monotonic() - settled_at >= 8:  # no late escalation or request follows
                break
        else:
            settled_at = None
        time.sleep(1)
    for topic in (settings.topics.alerts, settings.topics.retrain_requests, settings.topics.retrain_results):
        assert wait_caught_up(settings, settings.sink_group, topic, timeout=60), f"sink behind on {topic}"
    return requests, results


@pytest.fixture(scope="module")
def run(kafka_settings: Settings, tmp_path_factory):
    """`driftctl run` + `driftctl produce --file`, until every request has its result."""
    tmp = tmp_path_factory.mktemp("retrain")
    tag = f"{kafka_settings.topic_prefix}-rt"
    settings = kafka_settings.model_copy(
        update={
            "topic_prefix": tag,  # own topics: other tests' events stay out of this story
            "app_id": f"{tag}-streams",
            "sink_group": f"{tag}-sink",
            "router_group": f"{tag}-router",
            "retrain_group": f"{tag}-retrain",
            "run_dir": tmp / "run",
            "registry_dir": tmp / "models",
            "clickhouse_dsn": SecretStr(f"chdb:{tmp / 'ch'}"),
            "router_coalesce_seconds": 3.0,
            "rollout_enabled": False,  # this story is the job's decision; the release loop: test_release.py
            "rollout_group": f"{tag}-rollout",
        }
    )
    ensure_topics(settings)
    events_file = tmp / "events.jsonl"
    assert STORY.write_jsonl(events_file) == STORY.total_events
    with open(tmp / "driftctl-run.log", "ab") as log:
        t0 = time.monotonic()
        services = driftctl(settings, "run", log=log)
        try:
            requests, results = produce_and_wait(settings, events_file, services, tmp)
            elapsed = time.monotonic() - t0
        finally:
            services.send_signal(signal.SIGINT)
            code = services.wait(60)
    print(f"\nretraining end to end: {elapsed:.1f}s, {len(requests)} requests, {len(results)} results")
    assert code == 0, f"driftctl run exit code {code}; see {tmp / 'driftctl-run.log'}"
    yield settings, requests, results


@pytest.fixture(scope="module")
def clickhouse(run):
    """The store the sink wrote (the sink has stopped); closed after this module, since chdb
    hosts one data path per process and other tests open their own."""
    client = open_clickhouse(run[0])
    yield client
    close_clickhouse(client)


def test_the_story_changes_the_error_rate_of_exactly_the_drifted_slices():
    story = RetrainStory(events_per_slice=1200, onset=600)
    errors: dict[tuple[str, bool], list[bool]] = {}
    for e in story.events():
        after = int(e["event_id"].rsplit("-", 1)[1]) >= story.onset
        errors.setdefault((e["slice"], after), []).append((e["prediction"] >= 0.5) != bool(e["label"]))
    rate = {k: sum(v) / len(v) for k, v in errors.items()}
    for s in story.slices:
        assert rate[(s, False)] < 0.25, "the deployed model serves every slice before the change"
        if s in story.drifted:
            assert rate[(s, True)] > 0.7
        else:
            assert abs(rate[(s, True)] - rate[(s, False)]) < 0.05
    assert [e["event_id"] for e in story.events()][:5] == [e["event_id"] for e in story.events()][:5]


def test_results_for_exactly_the_drifted_slices_none_updating_everything(run, clickhouse):
    _settings, _requests, results = run
    client = clickhouse
    cols, rows = query(
        client,
        "SELECT request_id, slices, tier, modules_updated, params_updated, params_total, metric_before, "
        "metric_after, decision, reason FROM retrain_results FINAL ORDER BY finished_at",
    )
    assert rows, "no retrain_results rows"
    for r in rows:
        print(dict(zip(cols, r)))
    assert {s for r in rows for s in r[1]} == set(STORY.drifted), "results for exactly the drifted slices"
    assert all(0 < r[4] < r[5] for r in rows), "every job updated some, never all, parameters"
    assert not [r for r in rows if r[9].startswith("job failed")], "no job crashed"
    # The model is bootstrapped on the oldest events of every partition up to the first request's
    # onset, so no drifted slice's new concept is in it: each one has a gap its adapter closes.
    promoted = {s for r in rows if r[8] == "PROMOTED" for s in r[1]}
    assert promoted == set(STORY.drifted), "every drifted slice's adapter recovers its new concept"
    assert all(r[2] == "ADAPTER" for r in rows if r[8] == "PROMOTED"), "the cheapest tier was enough"
    assert len(rows) == len({r["request_id"] for r in results})


def test_alert_request_result_join_in_clickhouse(clickhouse):
    client = clickhouse
    _, orphans = query(
        client,
        "SELECT r.request_id, aid FROM (SELECT * FROM retrain_requests FINAL) AS r ARRAY JOIN r.alert_ids AS aid "
        "LEFT ANTI JOIN (SELECT alert_id FROM drift_alerts FINAL) AS a ON a.alert_id = aid",
    )
    assert orphans == [], "every alert a request names is in drift_alerts"
    _, joined = query(
        client,
        "SELECT a.slice, a.alert_type, q.tier, res.decision FROM (SELECT * FROM retrain_results FINAL) AS res "
        "INNER JOIN (SELECT * FROM retrain_requests FINAL) AS q ON q.request_id = res.request_id "
        "ARRAY JOIN q.alert_ids AS aid INNER JOIN (SELECT * FROM drift_alerts FINAL) AS a ON a.alert_id = aid",
    )
    assert {row[0] for row in joined} == set(STORY.drifted)
    _, n = query(client, "SELECT count() FROM (SELECT request_id FROM retrain_results FINAL) "
                         "WHERE request_id NOT IN (SELECT request_id FROM retrain_requests FINAL)")  # fmt: skip
    assert n[0][0] == 0, "every result joins to its request"


def test_the_first_job_bootstrapped_the_model_with_no_train_step(run):
    from retrain_jobs.registry import Registry

    settings, _requests, results = run
    registry = Registry(settings.registry_dir)
    assert registry.current(STORY.model) is not None
    versions = registry.versions(STORY.model)
    assert len(versions) >= 1 + sum(r["decision"] == "PROMOTED" for r in results)
    boot = versions[0]
    assert boot.request_id.startswith("bootstrap:") and boot.snapshot["slice_filter"] == []
    assert "before_event_time" in boot.snapshot, "fitted on the reference data from before the drift"


def test_a_restarted_router_rebuilds_budget_cooldown_and_requested_alerts(kafka_settings: Settings):
    from confluent_kafka import Producer

    from consumers.router_service import RouterService
    from retrain_jobs.dependency import plan

    tag = f"{kafka_settings.topic_prefix}-rr"
    settings = kafka_settings.model_copy(update={"topic_prefix": tag, "router_group": f"{tag}-router"})
    ensure_topics(settings)
    now_ms = int(time.time() * 1000)
    snapshot = {"topic": settings.topics.events, "ranges": [], "slice_filter": ["eu"], "labelled_only": True}
    base = {"schema_version": 1, "model": "m", "modules": ["adapter.eu"], "tier": "ADAPTER", "snapshot": snapshot,
            "priority": 2000, "policy_version": "router-1"}  # fmt: skip
    open_req = {**base, "request_id": "open", "alert_ids": ["a1"], "slices": ["eu"], "created_at": now_ms}
    done_req = {**base, "request_id": "done", "alert_ids": ["a2"], "slices": ["us"], "created_at": now_ms - 1000}
    done_res = {
        "schema_version": 1, "request_id": "done", "model": "m", "new_version": "v2", "parent_version": "v1",
        "tier": "ADAPTER", "slices": ["us"], "modules_updated": ["adapter.us"], "params_updated": 1, "params_total": 9,
        "train_seconds": 0.1, "metric_name": "log_loss", "metric_before": 0.7, "metric_after": 0.5,
        "other_slices_max_regression": 0.0, "latency_ms": 1.0, "decision": "PROMOTED", "reason": "ok",
        "artifact_uri": None, "finished_at": now_ms,
    }  # fmt: skip
    producer = Producer(settings.producer_config())
    for req in (open_req, done_req):
        producer.produce(settings.topics.retrain_requests, key=b"m", value=RETRAIN_REQUEST.encode(req))
    producer.produce(settings.topics.retrain_results, key=b"m", value=RETRAIN_RESULT.encode(done_res))
    assert producer.flush(30) == 0

    svc = RouterService(settings, planner=lambda m, alerts, tier, n: plan(None, alerts, tier=tier, n_slices_seen=n))
    assert list(svc.policy.in_flight) == ["open"], "the request without a result holds a budget slot"
    assert {"a1", "a2"} <= set(svc.policy.requested_alerts), "replayed alerts of both are duplicates"
    assert svc.policy.cooldown_until[("m", "us")] > time.time(), "the finished one's slice is cooling down"
