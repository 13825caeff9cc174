"""The rollout service's loop with in-memory Kafka and registry stand-ins: what it publishes and
when, pointer swaps, stale parents, resuming from its checkpoint, republishing pointers, bad
records. The decisions themselves are tested in test_rollout.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

import retrain_jobs.rollout_service as service_mod
from retrain_jobs.registry import RegistryError
from retrain_jobs.rollout_service import RolloutService
from schemas.codec import EVENT, MODEL_UPDATE, RETRAIN_RESULT
from schemas.settings import load_settings
from tests.fakes import FakeConsumer, FakeMessage, FakeProducer

SNAPSHOT_END = 40  # the candidate's training snapshot ends here on partition 0


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr(service_mod, "EVENTS_BATCH", 25)  # several steps per rollout


@dataclass
class Manifest:
    parent_version: str | None
    request_id: str | None
    snapshot: dict | None = None


@dataclass
class FakeRegistry:
    """The registry surface the service uses: manifests, the pointer, CAS promote and rollback."""

    root: object
    current: dict = field(default_factory=lambda: {"m": "v1"})
    manifests: dict = field(default_factory=dict)
    log: list = field(default_factory=list)

    def models(self):
        return sorted(self.current)

    def current_version(self, model):
        return self.current.get(model)

    def manifest(self, model, version):
        if (model, version) not in self.manifests:
            raise RegistryError(f"no {version}")
        return self.manifests[(model, version)]

    def load(self, model, version):
        return version, self.manifest(model, version)

    def promote(self, model, version, *, expect_current=...):
        if expect_current is not ... and self.current.get(model) not in (expect_current, version):
            raise RegistryError(f"current moved to {self.current.get(model)}")
        self.current[model] = version
        self.log.append(("PROMOTED", version))

    def rollback(self, model, to=None, *, expect_current=...):
        if expect_current is not ... and self.current.get(model) != expect_current:
            raise RegistryError("moved")
        prev, self.current[model] = self.current[model], to
        self.log.append(("ROLLED_BACK", to))
        return prev, to


class FakeEvents:
    """An assigned consumer over fixed per-partition logs of the events topic."""

    def __init__(self, topic, logs):
        self.topic, self.logs, self.pos = topic, logs, {}

    def list_topics(self, topic, timeout=None):
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=dict.fromkeys(self.logs))})

    def get_watermark_offsets(self, tp, timeout=None):
        return 0, len(self.logs[tp.partition])

    def assign(self, tps):
        self.pos = {tp.partition: tp.offset for tp in tps}

    def unassign(self):
        self.pos = {}

    def consume(self, n, timeout=None):
        out = []
        for p in sorted(self.pos):
            while self.pos[p] < len(self.logs[p]) and len(out) < n:
                out.append(self.logs[p][self.pos[p]])
                self.pos[p] += 1
        return out

    def close(self):
        pass


def settings(tmp_path, **kw):
    return load_settings(**{"topic_prefix": "tr", "registry_dir": tmp_path, "rollout_canary_events": 60,
                            "rollout_watch_events": 100, "rollout_checkpoint_events": 10, **kw})


def event(i, regime=1.0, slice_="eu", label=None):
    label = i % 2 if label is None else label
    return {"schema_version": EVENT.version, "event_id": f"e{i}", "event_time": 1_790_000_000_000 + i, "model": "m",
            "slice": slice_, "features": {"regime": regime}, "categorical": {}, "prediction": None, "label": label,
            "model_version": None}  # fmt: skip


def scorer(net, events):
    """v1 (and v3) predict 0.5; v2 is right where regime > 0 and wrong where it is < 0."""
    out = []
    for e in events:
        right = 0.85 if e["label"] == 1 else 0.15
        out.append(0.5 if net != "v2" else (right if e["features"]["regime"] > 0 else 1 - right))
    return np.array(out)


def candidate_result():
    return {"schema_version": 2, "request_id": "req-1", "model": "m", "new_version": "v2", "parent_version": "v1",
            "tier": "ADAPTER", "slices": ["eu"], "modules_updated": ["adapter.eu"], "params_updated": 10,
            "params_total": 100, "train_seconds": 1.0, "metric_name": "log_loss", "metric_before": 0.7,
            "metric_after": 0.5, "other_slices_max_regression": 0.0, "latency_ms": 1.0, "decision": "CANDIDATE",
            "reason": "passed: ...", "artifact_uri": None, "finished_at": 1, "cause": None, "module_scores": {},
            "checks": {"gate_gain": 0.2}}  # fmt: skip


def build(tmp_path, logs, registry=None, **kw):
    s = settings(tmp_path, **kw)
    reg = registry or FakeRegistry(tmp_path)
    reg.manifests.setdefault(("m", "v1"), Manifest(None, None))
    reg.manifests.setdefault(("m", "v2"), Manifest("v1", "req-1", {
        "topic": s.topics.events, "ranges": [{"partition": 0, "start_offset": 0, "end_offset": SNAPSHOT_END}]}))
    results = FakeConsumer([FakeMessage(s.topics.retrain_results, 0, 0, RETRAIN_RESULT.encode(candidate_result()))])
    events = FakeEvents(s.topics.events, {p: [FakeMessage(s.topics.events, p, o, EVENT.encode(e) if isinstance(e, dict)
                                                          else e, key=b"eu") for o, e in enumerate(log)]
                                          for p, log in logs.items()})  # fmt: skip
    producer = FakeProducer()
    svc = RolloutService(s, consumer=results, events=events, producer=producer, registry=reg, scorer=scorer,
                         restore=False)  # fmt: skip
    return svc, reg, producer, results


def published(producer, s):
    models = [MODEL_UPDATE.decode(v) for t, _k, v in producer.delivered if t == s.topics.models]
    results = [RETRAIN_RESULT.decode(v) for t, _k, v in producer.delivered if t == s.topics.retrain_results]
    return models, results


def run_until(svc, cond, steps=200):
    for _ in range(steps):
        svc.step()
        if cond():
            return
    raise AssertionError("condition not reached")


def test_a_better_candidate_is_shadowed_canaried_promoted_and_watched(tmp_path):
    # before the snapshot's end the candidate is wrong: those events must not count
    log = [event(i, regime=-1.0) for i in range(SNAPSHOT_END)] + [event(i) for i in range(SNAPSHOT_END, 1000)]
    svc, reg, producer, results = build(tmp_path, {0: log, 1: [event(5000, slice_="us")]})
    run_until(svc, lambda: not svc.active and svc.store.load("m", "req-1") is not None)
    models, finals = published(producer, svc.settings)
    assert [m["stage"] for m in models] == ["CANDIDATE", "SHADOW", "CANARY", "PROMOTED"]
    assert [m["current_version"] for m in models] == ["v1", "v1", "v1", "v2"]
    assert {m["update_id"] for m in models} == {f"m:v2:{s}" for s in ("CANDIDATE", "SHADOW", "CANARY", "PROMOTED")}
    canary = models[2]
    assert canary["canary_fraction"] == 0.10 and canary["slices"] == ["eu"] and canary["statistic"] >= 20
    assert canary["events"] > 0 and "e-value" in canary["reason"]
    assert [(r["decision"], r["cause"]) for r in finals] == [("PROMOTED", "rollout_canary_passed")]
    assert finals[0]["request_id"] == "req-1" and finals[0]["checks"]["gate_gain"] == 0.2
    assert finals[0]["checks"]["rollout_canary_events"] == 60
    assert reg.current["m"] == "v2" and reg.log == [("PROMOTED", "v2")]
    state = svc.store.load("m", "req-1")
    assert state.closed and state.rollout.phase == "PROMOTED" and state.rollout.history[-1]["kind"] == "WATCH_PASSED"
    assert results.commits, "the candidate's result was committed after its checkpoint"


def test_a_regression_in_the_watch_rolls_the_pointer_back(tmp_path):
    log = [event(i) for i in range(SNAPSHOT_END, SNAPSHOT_END + 200)] + [event(i, -1.0) for i in range(1000, 1400)]
    svc, reg, producer, _ = build(tmp_path, {0: [event(i) for i in range(SNAPSHOT_END)] + log},
                                  rollout_watch_events=300)
    run_until(svc, lambda: not svc.active and svc.store.load("m", "req-1") is not None)
    models, finals = published(producer, svc.settings)
    assert [m["stage"] for m in models][-2:] == ["PROMOTED", "ROLLED_BACK"]
    back = models[-1]
    assert back["current_version"] == "v1" and back["version"] == "v2" and back["decision"] == "ROLLED_BACK"
    assert [(r["decision"], r["cause"]) for r in finals] == [("PROMOTED", "rollout_canary_passed"),
                                                            ("ROLLED_BACK", "rollout_watch_regressed")]
    assert reg.current["m"] == "v1" and reg.log == [("PROMOTED", "v2"), ("ROLLED_BACK", "v1")]


def test_a_worse_candidate_is_rejected_and_the_pointer_never_moves(tmp_path):
    svc, reg, producer, _ = build(tmp_path, {0: [event(i, -1.0) for i in range(600)]})
    run_until(svc, lambda: not svc.active and svc.store.load("m", "req-1") is not None)
    models, finals = published(producer, svc.settings)
    assert [m["stage"] for m in models] == ["CANDIDATE", "SHADOW", "REJECTED"]
    assert finals[0]["decision"] == "REJECTED" and finals[0]["cause"] == "rollout_shadow_lost"
    assert reg.current["m"] == "v1" and reg.log == []


def test_a_stale_parent_is_rejected_instead_of_promoted(tmp_path):
    svc, reg, producer, _ = build(tmp_path, {0: [event(i) for i in range(2000)]})
    svc.step()  # the candidate starts
    reg.manifests[("m", "v3")] = Manifest("v1", "other")
    reg.current["m"] = "v3"  # another rollout promoted first
    run_until(svc, lambda: not svc.active)
    models, finals = published(producer, svc.settings)
    assert models[-1]["stage"] == "REJECTED" and finals[-1]["cause"] == "rollout_stale_parent"
    assert reg.current["m"] == "v3"


def test_a_restarted_service_resumes_from_its_checkpoint(tmp_path):
    log = [event(i) for i in range(1000)]
    svc, reg, producer, _ = build(tmp_path, {0: log})
    svc.step()
    svc.step()
    svc.flush(force=True)
    seen = svc.store.load("m", "req-1")
    assert not seen.closed and seen.cursors[0] > SNAPSHOT_END
    # a new process over the same registry and store: no new result message, only the checkpoint
    s = svc.settings
    events = FakeEvents(s.topics.events, svc.events.logs)
    again = RolloutService(s, consumer=FakeConsumer([]), events=events, producer=producer, registry=reg, scorer=scorer,
                           restore=False)  # fmt: skip
    for st in again.store.open():
        again.active[st.request_id] = st
    again._reassign()
    assert events.pos == {0: seen.cursors[0]}, "reads on from the checkpointed offset"
    run_until(again, lambda: not again.active)
    _models, finals = published(producer, s)
    assert [r["decision"] for r in finals] == ["PROMOTED"] and reg.current["m"] == "v2"
    assert again.store.load("m", "req-1").rollout.events <= 1000 - SNAPSHOT_END


def test_restore_finishes_a_promotion_the_checkpoint_missed_and_republishes_pointers(tmp_path, monkeypatch):
    svc, reg, producer, _ = build(tmp_path, {0: [event(i) for i in range(SNAPSHOT_END + 5)]})
    svc.step()
    svc.flush(force=True)
    assert svc.store.load("m", "req-1").rollout.phase == "SHADOW"
    reg.current["m"] = "v2"  # the pointer swap happened, then the process died before its checkpoint
    reg.current["other"] = "v7"  # a model the topic has never shown (e.g. a bootstrap)
    reg.manifests[("other", "v7")] = Manifest(None, "bootstrap:x")
    shown = [MODEL_UPDATE.decode(v) for t, _k, v in producer.delivered if t == svc.settings.topics.models]
    monkeypatch.setattr(service_mod, "iter_topic", lambda *a, **k: (m for m in shown))
    s = svc.settings
    again = RolloutService(s, consumer=FakeConsumer([]), events=FakeEvents(s.topics.events, svc.events.logs),
                           producer=producer, registry=reg, scorer=scorer)  # fmt: skip
    models, finals = published(producer, s)
    assert [(m["model"], m["stage"], m["current_version"]) for m in models[-2:]] == [
        ("m", "PROMOTED", "v2"), ("other", "PROMOTED", "v7")]
    assert models[-1]["request_id"] == "bootstrap:x" and "republished" in models[-1]["reason"]
    assert finals[-1]["decision"] == "PROMOTED" and finals[-1]["cause"] == "rollout_registry_moved"
    assert again.active["req-1"].rollout.phase == "WATCH"
    n = len(producer.delivered)
    again.reconcile()
    assert len(producer.delivered) == n, "topic and registry agree: nothing to republish"
    reg.current["other"] = "v6"  # rolled back by hand
    reg.manifests[("other", "v6")] = Manifest(None, None)
    reg.manifests[("other", "v7")] = Manifest("v6", "bootstrap:x")
    again.reconcile()
    last = MODEL_UPDATE.decode(producer.delivered[-1][2])
    assert (last["stage"], last["version"], last["current_version"]) == ("ROLLED_BACK", "v7", "v6")


def test_bad_records_are_skipped_not_fatal(tmp_path):
    log = [b"not an event", b"\xc3\x01garbage"] + [event(i) for i in range(2, 1000)]
    svc, reg, _producer, results = build(tmp_path, {0: [event(i) for i in range(SNAPSHOT_END)] + log})
    results.feed(FakeMessage(svc.settings.topics.retrain_results, 0, 1, b"junk"))
    run_until(svc, lambda: not svc.active and svc.store.load("m", "req-1") is not None)
    assert svc.skipped == 3 and reg.current["m"] == "v2"


def test_a_duplicate_candidate_result_starts_nothing(tmp_path):
    svc, _reg, producer, results = build(tmp_path, {0: [event(i, -1.0) for i in range(600)]})
    run_until(svc, lambda: not svc.active and svc.store.load("m", "req-1") is not None)
    n = len(producer.delivered)
    results.feed(FakeMessage(svc.settings.topics.retrain_results, 0, 1, RETRAIN_RESULT.encode(candidate_result())))
    svc.step()
    assert len(producer.delivered) == n and not svc.active


def test_with_rollout_off_candidates_are_ignored_but_pointers_are_announced(tmp_path):
    svc, _reg, producer, _ = build(tmp_path, {0: [event(i) for i in range(100)]}, rollout_enabled=False)
    svc.step()
    models, finals = published(producer, svc.settings)
    assert not svc.active and finals == []
    assert [(m["stage"], m["current_version"]) for m in models] == [("PROMOTED", "v1")]


def test_records_of_different_rollouts_go_out_in_the_order_they_were_decided(tmp_path):
    svc, _reg, producer, _ = build(tmp_path, {0: []})
    svc.step()  # starts req-1
    st1 = svc.active["req-1"]
    other = service_mod.RolloutState(service_mod.Rollout(svc.config, "m", "v9", "v1", ["us"], "req-2"), {}, {})
    svc.active["req-2"] = other
    base = MODEL_UPDATE.decode(producer.delivered[-1][2])
    for st, tag in ((other, "first"), (st1, "second"), (other, "third")):
        svc._emit(st, "models", {**base, "reason": tag})
    assert svc.flush()
    assert [MODEL_UPDATE.decode(v)["reason"] for _t, _k, v in producer.delivered[-3:]] == ["first", "second", "third"]
