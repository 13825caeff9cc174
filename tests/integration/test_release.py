"""The release loop on a real broker with real models: a candidate made by a real retrain job is
shadowed on produced labelled events and promoted; another one is promoted and then rolled back
by the watch when its slice's concept returns. Checked on the models topic (ModelUpdate stages
and what current_version names at each), the results topic (final decisions for the request)
and the registry pointer. The rollout service runs in a thread of this process."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from confluent_kafka import Producer

from retrain_jobs.job import bootstrap, run_job
from retrain_jobs.registry import Registry
from retrain_jobs.rollout_service import RolloutService
from retrain_jobs.scenario import RetrainScenario
from runtime.kafka import end_offsets, read_topic, value_decoder
from runtime.topics import ensure_topics
from schemas.codec import EVENT, MODEL_UPDATE, RETRAIN_RESULT
from schemas.settings import Settings

TRAIN = 600  # s1's post-drift events in the candidate's training snapshot
SC = RetrainScenario(n_slices=2, pre_events=600, post_events=TRAIN + 900, drifted="s1", seed=31, model="rm")
FAST = {"retrain_bootstrap_epochs": 10, "retrain_epochs": 25, "rollout_canary_events": 100,
        "rollout_watch_events": 400, "rollout_checkpoint_events": 50, "rollout_reconcile_seconds": 1.0}


def post_index(e: dict) -> int:
    return int(e["event_id"].rsplit("-", 1)[1]) - SC.pre_events


def produce(settings: Settings, events: list[dict]) -> None:
    p = Producer(settings.producer_config())
    for e in events:
        p.produce(settings.topics.events, key=e["slice"].encode(), value=EVENT.encode(e))
    assert p.flush(60) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A registry with the incumbent v0001 fitted on the pre-drift events (no Kafka needed)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rollout-models")
    pre, post = SC.events()
    bootstrap(SC.model, pre, Registry(root), Settings(registry_dir=root, **{k: v for k, v in FAST.items()
                                                                             if k.startswith("retrain_")}))
    return root, post


def setup(kafka_settings: Settings, trained, tmp_path: Path, tag: str, post: list[dict]) -> tuple[Settings, dict]:
    """Own topics; the training snapshot on the events topic; a real job's CANDIDATE on the results topic."""
    root, _ = trained
    reg_dir = tmp_path / "models"
    shutil.copytree(root, reg_dir)
    prefix = f"{kafka_settings.topic_prefix}-{tag}"
    settings = kafka_settings.model_copy(update={"topic_prefix": prefix, "rollout_group": f"{prefix}-rollout",
                                                 "registry_dir": reg_dir, **FAST})  # fmt: skip
    ensure_topics(settings)
    snapshot = [e for e in post if post_index(e) < TRAIN]
    produce(settings, snapshot)
    ends = end_offsets(settings, settings.topics.events)
    request = {"request_id": f"req-{tag}", "alert_ids": ["a1"], "model": SC.model, "slices": ["s1"],
               "modules": ["adapter.s1"], "tier": "ADAPTER", "priority": 1, "policy_version": "t", "created_at": 1,
               "snapshot": {"topic": settings.topics.events, "slice_filter": ["s1"], "labelled_only": True,
                            "ranges": [{"partition": p, "start_offset": 0, "end_offset": e} for p, e in ends.items()]}}
    result = run_job(request, snapshot, Registry(reg_dir), settings)
    assert result["decision"] == "CANDIDATE", result["reason"]
    assert Registry(reg_dir).current_version(SC.model) == "v0001"
    p = Producer(settings.producer_config())
    p.produce(settings.topics.retrain_results, key=SC.model.encode(), value=RETRAIN_RESULT.encode(result))
    assert p.flush(30) == 0
    return settings, result


def serve(settings: Settings) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=RolloutService(settings).run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def wait_for(settings: Settings, request_id: str, decision: str, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = read_topic(settings, settings.topics.retrain_results, decode=value_decoder(RETRAIN_RESULT.decode))
        if any(r["request_id"] == request_id and r["decision"] == decision for r in results):
            return results
        time.sleep(1)
    raise AssertionError(f"no {decision} result for {request_id} within {timeout}s")


def model_updates(settings: Settings) -> list[dict]:
    return read_topic(settings, settings.topics.models, decode=value_decoder(MODEL_UPDATE.decode))


def test_a_candidate_is_shadowed_on_new_events_and_promoted(kafka_settings, trained, tmp_path):
    _, post = trained
    settings, candidate = setup(kafka_settings, trained, tmp_path, "promote", post)
    stop, thread = serve(settings)
    try:
        produce(settings, [e for e in post if post_index(e) >= TRAIN])  # the new concept lasts
        results = wait_for(settings, candidate["request_id"], "PROMOTED")
        time.sleep(2)  # the service reconciles; nothing else may follow
    finally:
        stop.set()
        thread.join(60)
    ours = [u for u in model_updates(settings) if u["model"] == SC.model]
    stages = [(u["stage"], u["version"], u["current_version"]) for u in ours]
    assert stages == [("PROMOTED", "v0001", "v0001"),  # on start: the registry's pointer, which the topic lacked
                      ("CANDIDATE", "v0002", "v0001"), ("SHADOW", "v0002", "v0001"), ("CANARY", "v0002", "v0001"),
                      ("PROMOTED", "v0002", "v0002")]
    canary = next(u for u in ours if u["stage"] == "CANARY")
    assert canary["canary_fraction"] == pytest.approx(0.1) and canary["slices"] == ["s1"]
    assert canary["statistic"] >= 1 / settings.rollout_alpha and 0 < canary["events"] < 600
    final = [r for r in results if r["request_id"] == candidate["request_id"] and r["decision"] != "CANDIDATE"]
    assert [(r["decision"], r["cause"]) for r in final] == [("PROMOTED", "rollout_canary_passed")]
    assert final[0]["checks"]["rollout_shadow_mean_gain"] > 0 and final[0]["new_version"] == "v0002"
    assert Registry(settings.registry_dir).current_version(SC.model) == "v0002"


def test_a_promoted_version_that_regresses_is_rolled_back_by_the_watch(kafka_settings, trained, tmp_path):
    # the same inputs (and so the same candidate), but s1's old concept returns 300 events after the snapshot
    _, post = dataclasses.replace(SC, revert_after=TRAIN + 300).events()
    settings, candidate = setup(kafka_settings, trained, tmp_path, "rollback", post)
    stop, thread = serve(settings)
    try:
        produce(settings, [e for e in post if post_index(e) >= TRAIN])
        results = wait_for(settings, candidate["request_id"], "ROLLED_BACK")
    finally:
        stop.set()
        thread.join(60)
    ours = [u for u in model_updates(settings) if u["model"] == SC.model and u["version"] == "v0002"]
    assert [(u["stage"], u["current_version"]) for u in ours] == [
        ("CANDIDATE", "v0001"), ("SHADOW", "v0001"), ("CANARY", "v0001"), ("PROMOTED", "v0002"),
        ("ROLLED_BACK", "v0001")]
    back = ours[-1]
    assert back["decision"] == "ROLLED_BACK" and back["statistic"] >= 1 / settings.rollout_harm_alpha
    final = [(r["decision"], r["cause"]) for r in results
             if r["request_id"] == candidate["request_id"] and r["decision"] != "CANDIDATE"]
    assert final == [("PROMOTED", "rollout_canary_passed"), ("ROLLED_BACK", "rollout_watch_regressed")]
    reg = Registry(settings.registry_dir)
    assert reg.current_version(SC.model) == "v0001"
    assert [e["action"] for e in reg.log(SC.model)][-2:] == ["PROMOTED", "ROLLED_BACK"]
