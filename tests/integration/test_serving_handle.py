"""Issue 10, serving: a handle in another process serves while a rollout promotes, then rolls
back, and every prediction event it produced names the version that made it.

The application (tests/integration/serving_app.py) serves one event at a time through a
ModelHandle and produces each to the events topic. Two rollouts:

- played by the test the way the rollout service does it (registry pointer swap first, then the
  ModelUpdate: SHADOW, CANARY at 50% of slice a, PROMOTED, ROLLED_BACK), so every phase is long
  enough to check the canary split event by event;
- run by the real rollout service (``python -m deploy.services rollout``) on the application's
  own labelled events: a candidate trained for a changed concept wins the shadow test, passes
  the canary and is promoted; then the concept changes back and the watch rolls it back.

Then the test reads the events topic and checks each event: its prediction is exactly what its
model_version's weights give, and its version is the one the phase it was served in prescribes.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import uuid

import pytest
import torch
from confluent_kafka import Producer
from torch.nn import functional as F

from deploy.services import settings_env
from retrain_jobs.features import binary_labels
from retrain_jobs.model import TabularModularModel
from retrain_jobs.registry import Registry
from retrain_jobs.routing import serves_candidate
from retrain_jobs.selective import predict
from runtime.kafka import read_topic, value_decoder
from schemas.codec import EVENT, MODEL_UPDATE, RETRAIN_RESULT
from tests.integration.serving_app import event

MARGIN = 3  # events around a swap whose phase is ambiguous (the swap line races the serve loop)


class App:
    """The serving application's process and its output lines."""

    def __init__(self, settings, model: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.serving_app", model, "0.01"], env=settings_env(settings),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float = 60.0, skip_swaps: bool = False) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the serving app said no {prefix!r} line within {timeout}s")
            if line.startswith(prefix):
                return line.split()
            assert skip_swaps or not line.startswith("swap"), f"unexpected swap before {prefix!r}: {line}"

    def say(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> list[str]:
        self.proc.stdin.close()
        done = self.expect("done")
        assert self.proc.wait(30) == 0
        return done


def test_a_handle_in_another_process_follows_promotion_and_rollback(kafka_settings, tmp_path):
    model = f"serve-{uuid.uuid4().hex[:6]}"
    settings = kafka_settings.model_copy(update={"registry_dir": tmp_path / "models"})
    registry = Registry(settings.registry_dir)
    train = [event(model, i) for i in range(200)]
    for seed, parent in ((0, None), (1, "v0001")):
        registry.save(model, TabularModularModel.fit_new(train, seed=seed), parent_version=parent)
    registry.promote(model, "v0001")
    producer = Producer(settings.producer_config())

    def announce(stage: str, current: str, fraction: float = 0.0, decision: str | None = None) -> None:
        update = {"update_id": f"{model}:v0002:{stage}", "model": model, "version": "v0002",
                  "previous_version": "v0001", "current_version": current, "stage": stage,
                  "canary_fraction": fraction, "slices": ["a"], "decision": decision, "reason": "test",
                  "request_id": "r1", "events": 0, "updated_at": int(time.time() * 1000)}  # fmt: skip
        producer.produce(settings.topics.models, key=model.encode(), value=MODEL_UPDATE.encode(update))
        assert producer.flush(30) == 0

    announce("CANDIDATE", "v0001")  # on the topic before the app starts: read at catch-up, changes nothing
    app = App(settings, model)
    try:
        assert app.expect("ready")[1] == "v0001"
        time.sleep(1.0)
        announce("SHADOW", "v0001")  # shadow scores offline: the handle keeps serving v0001 alone
        time.sleep(1.0)
        announce("CANARY", "v0001", fraction=0.5)
        canary_at = int(app.expect("swap")[1])
        time.sleep(1.5)
        registry.promote(model, "v0002", expect_current="v0001")  # pointer first, then the topic
        announce("PROMOTED", "v0002", decision="PROMOTED")
        promoted_at = int(app.expect("swap")[1])
        time.sleep(1.5)
        assert registry.rollback(model) == ("v0002", "v0001")
        announce("ROLLED_BACK", "v0001", decision="ROLLED_BACK")
        rolled_back_at = int(app.expect("swap")[1])
        time.sleep(1.0)
        served, delivered, failed = map(int, app.stop()[1:])
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
    assert failed == 0 and delivered == served

    produced = [e for e in read_topic(settings, settings.topics.events, decode=value_decoder(EVENT.decode))
                if e["model"] == model]  # fmt: skip
    assert len(produced) == served and len({e["event_id"] for e in produced}) == served
    nets = {v: registry.load(model, v)[0] for v in ("v0001", "v0002")}
    by_version: dict[str, list[dict]] = {}
    for e in produced:
        by_version.setdefault(e["model_version"], []).append(e)
    assert set(by_version) == {"v0001", "v0002"}
    for version, events in by_version.items():  # each prediction is exactly its version's score
        assert [e["prediction"] for e in events] == pytest.approx(predict(nets[version], events).tolist(), abs=1e-6)
        assert all(e["label"] in (0, 1) for e in events)  # the event's own fields kept

    def prescribed(e: dict, i: int) -> str | None:
        if any(abs(i - at) <= MARGIN for at in (canary_at, promoted_at, rolled_back_at)):
            return None
        if canary_at < i < promoted_at:
            return "v0002" if e["slice"] == "a" and serves_candidate(e["event_id"], 0.5) else "v0001"
        return "v0002" if promoted_at < i < rolled_back_at else "v0001"

    seq = {e["event_id"]: int(e["event_id"].rsplit("-", 1)[1]) for e in produced}
    wrong = [(seq[e["event_id"]], e["slice"], e["model_version"]) for e in produced
             if prescribed(e, seq[e["event_id"]]) not in (None, e["model_version"])]  # fmt: skip
    assert not wrong, f"events served by the wrong version (seq, slice, version): {wrong[:10]}"
    phases = [canary_at, promoted_at - canary_at, rolled_back_at - promoted_at, served - rolled_back_at]
    assert min(phases) > 2 * MARGIN, f"events per phase {phases}: too few to tell the phases apart"
    canary = [e for e in produced if canary_at + MARGIN < seq[e["event_id"]] < promoted_at - MARGIN]
    assert {e["model_version"] for e in canary if e["slice"] == "a"} == {"v0001", "v0002"}


def trained(events: list[dict], seed: int) -> TabularModularModel:
    """A model fitted on ``events`` (full batch Adam; a second or two)."""
    net = TabularModularModel.fit_new(events, seed=seed)
    prep, y = net.prepare(events), binary_labels(events)
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(net(prep.inputs, prep.slices), y).backward()
        opt.step()
    return net.eval()


def test_a_handle_follows_the_rollout_service_through_promotion_and_rollback(kafka_settings, tmp_path):
    model = f"svc-{uuid.uuid4().hex[:6]}"
    settings = kafka_settings.model_copy(update={
        "registry_dir": tmp_path / "models", "rollout_group": f"rollout-{model}", "metrics_port": 0,
        "rollout_canary_fraction": 0.5, "rollout_canary_events": 60, "rollout_watch_events": 300,
    })  # fmt: skip
    registry = Registry(settings.registry_dir)
    registry.save(model, trained([event(model, i, "A") for i in range(400)], 0), parent_version=None)
    registry.save(model, trained([event(model, i, "B") for i in range(400)], 1), parent_version="v0001")
    registry.promote(model, "v0001")
    service_log = (tmp_path / "rollout.log").open("wb")  # closed in the finally below
    service = subprocess.Popen([sys.executable, "-m", "deploy.services", "rollout"], env=settings_env(settings),
                               stdout=service_log, stderr=subprocess.STDOUT)  # fmt: skip
    app = App(settings, model)
    try:
        assert app.expect("ready")[1] == "v0001"
        app.say("concept B")  # the world changed on slice a: what v0002 was trained for
        time.sleep(1.0)
        candidate = {
            "request_id": f"req-{model}", "model": model, "new_version": "v0002", "parent_version": "v0001",
            "tier": "ADAPTER", "slices": ["a"], "modules_updated": ["adapter.a"], "params_updated": 1,
            "params_total": 10, "train_seconds": 1.0, "metric_name": "log_loss", "metric_before": 0.9,
            "metric_after": 0.3, "other_slices_max_regression": 0.0, "decision": "CANDIDATE",
            "reason": "passed the offline gate", "finished_at": int(time.time() * 1000),
        }  # fmt: skip
        producer = Producer(settings.producer_config())
        producer.produce(settings.topics.retrain_results, key=model.encode(), value=RETRAIN_RESULT.encode(candidate))
        assert producer.flush(30) == 0
        swaps = []
        while not swaps or swaps[-1][2:] != ["v0002", "-"]:  # the canary (maybe), then the promotion
            swaps.append(app.expect("swap", timeout=90))
        app.say("concept A")  # the change reverts: v0002 is now worse than its predecessor
        promoted_at = int(swaps[-1][1])
        rolled_back_at = int(app.expect("swap", timeout=120)[1])
        assert app.lines.empty() or not any(line.startswith("swap") for line in list(app.lines.queue))
        time.sleep(0.5)
        served, delivered, failed = map(int, app.stop()[1:])
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
        service.terminate()
        service.wait(30)
        service_log.close()
    log_tail = (tmp_path / "rollout.log").read_text()[-3000:]
    assert failed == 0 and delivered == served
    assert registry.current_version(model) == "v0001", log_tail
    updates = [u for u in read_topic(settings, settings.topics.models, decode=value_decoder(MODEL_UPDATE.decode))
               if u["model"] == model and u["version"] == "v0002"]  # fmt: skip
    assert [u["stage"] for u in updates] == ["CANDIDATE", "SHADOW", "CANARY", "PROMOTED", "ROLLED_BACK"], log_tail
    canary, rolled_back = updates[2], updates[-1]
    assert canary["candidate_loss"] < canary["incumbent_loss"]  # the shadow's events: the changed concept
    assert rolled_back["current_version"] == "v0001" and rolled_back["events"] > 0
    assert rolled_back["candidate_loss"] is not None and rolled_back["incumbent_loss"] is not None  # the watch's
    results = [r for r in read_topic(settings, settings.topics.retrain_results, decode=value_decoder(
        RETRAIN_RESULT.decode)) if r["request_id"] == candidate["request_id"]]  # fmt: skip
    assert [r["decision"] for r in results] == ["CANDIDATE", "PROMOTED", "ROLLED_BACK"]

    produced = [e for e in read_topic(settings, settings.topics.events, decode=value_decoder(EVENT.decode))
                if e["model"] == model]  # fmt: skip
    assert len(produced) == served
    nets = {v: registry.load(model, v)[0] for v in ("v0001", "v0002")}
    seq = {e["event_id"]: int(e["event_id"].rsplit("-", 1)[1]) for e in produced}
    for version in ("v0001", "v0002"):
        events = [e for e in produced if e["model_version"] == version]
        assert events, f"no event served by {version}"
        assert [e["prediction"] for e in events] == pytest.approx(predict(nets[version], events).tolist(), abs=1e-6)
    canary_at = int(swaps[0][1]) if len(swaps) > 1 else promoted_at
    for e in produced:
        i, v = seq[e["event_id"]], e["model_version"]
        if any(abs(i - at) <= MARGIN for at in (canary_at, promoted_at, rolled_back_at)):
            continue
        if i < canary_at or i > rolled_back_at:
            assert v == "v0001", (i, e["slice"], v)
        elif i > promoted_at:
            assert v == "v0002", (i, e["slice"], v)
        else:  # the canary
            assert v == ("v0002" if e["slice"] == "a" and serves_candidate(e["event_id"], 0.5) else "v0001")
