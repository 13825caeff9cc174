"""The serving handle without Kafka: what a ModelUpdate means, canary routing, swaps, threads."""

from __future__ import annotations

import threading

import pytest

from retrain_jobs.model import TabularModularModel
from retrain_jobs.registry import Registry
from retrain_jobs.routing import serves_candidate
from retrain_jobs.selective import predict
from retrain_jobs.serving import ModelHandle, Plan, ServingError, plan_for
from schemas.errors import SchemaError
from schemas.settings import load_settings

EVENTS = [
    {"event_id": f"e{i}", "event_time": 1_790_000_000_000 + i, "model": "m", "slice": "ab"[i % 2],
     "features": {"x": float(i % 7), "y": float(i)}, "categorical": {"c": "uv"[i % 3 == 0]}, "label": i % 2}
    for i in range(200)
]  # fmt: skip


def update(stage, version, current, fraction=0.0, slices=("a",), model="m"):
    return {"update_id": f"{model}:{version}:{stage}", "model": model, "version": version, "previous_version": "v0001",
            "current_version": current, "stage": stage, "canary_fraction": fraction, "slices": list(slices)}  # fmt: skip


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "models")
    for seed in (0, 1, 2):
        reg.save("m", TabularModularModel.fit_new(EVENTS, seed=seed), parent_version=None)
    reg.promote("m", "v0001")
    return reg


@pytest.fixture
def handle(registry, tmp_path):
    with ModelHandle(load_settings(run_dir=tmp_path), "m", registry=registry, follow=False) as h:
        yield h


def test_plans():
    assert plan_for(update("SHADOW", "v0002", "v0001")) == Plan("v0001", stage="SHADOW", update_id="m:v0002:SHADOW")
    canary = plan_for(update("CANARY", "v0002", "v0001", 0.1))
    assert (canary.current, canary.candidate, canary.fraction, canary.slices) == ("v0001", "v0002", 0.1, {"a"})
    assert plan_for(update("CANARY", "v0002", "v0001", 0.0)).candidate is None  # canary off: shadow only
    assert plan_for(update("PROMOTED", "v0002", None)).current == "v0002"  # no pointer named: its version
    assert plan_for(update("ROLLED_BACK", "v0002", "v0001")).current == "v0001"
    assert plan_for(update("REJECTED", "v0002", "v0001", 0.1)).candidate is None


def test_serves_the_registry_pointer_then_follows_updates(handle, registry):
    net1, _ = registry.load("m", "v0001")
    score, version = handle.predict(EVENTS[0])
    assert version == "v0001" and score == pytest.approx(float(predict(net1, EVENTS[:1])[0]))
    assert handle.apply(update("PROMOTED", "v0002", "v0002"))
    net2, _ = registry.load("m", "v0002")
    got = handle.predict_many(EVENTS)
    assert {p.version for p in got} == {"v0002"}
    assert [p.score for p in got] == pytest.approx(predict(net2, EVENTS).tolist())
    assert not handle.apply(update("PROMOTED", "v0002", "v0002"))  # a replay changes nothing
    assert not handle.apply(update("PROMOTED", "v0003", "v0003", model="other"))  # another model's record
    assert handle.apply(update("ROLLED_BACK", "v0002", "v0001"))
    assert handle.predict(EVENTS[0]).version == "v0001" and handle.stats.swaps == 2


def test_canary_routes_the_hashed_share_of_the_candidates_slices(handle, registry):
    handle.apply(update("CANARY", "v0002", "v0001", 0.5, slices=("a",)))
    net1, net2 = registry.load("m", "v0001")[0], registry.load("m", "v0002")[0]
    got = handle.predict_many(EVENTS)
    for e, p in zip(EVENTS, got):
        expect = "v0002" if e["slice"] == "a" and serves_candidate(e["event_id"], 0.5) else "v0001"
        assert p.version == expect
        assert p.score == pytest.approx(float(predict(net2 if expect == "v0002" else net1, [e])[0]))
    candidates = {p.version for e, p in zip(EVENTS, got) if e["slice"] == "a"}
    assert candidates == {"v0001", "v0002"}  # both sides of the split on slice a
    assert {p.version for e, p in zip(EVENTS, got) if e["slice"] == "b"} == {"v0001"}
    assert handle.stats.served["v0002"] + handle.stats.served["v0001"] == len(EVENTS)


def test_an_unloadable_version_keeps_the_old_one(handle):
    assert not handle.apply(update("PROMOTED", "v0009", "v0009"))
    assert handle.current_version == "v0001" and handle.stats.load_failures == 1
    assert "v0009" in handle.stats.last_error


def test_predictions_during_swaps_always_name_a_version_that_made_them(handle, registry):
    """Threads predict while another swaps back and forth: each score is its version's score."""
    nets = {v: registry.load("m", v)[0] for v in ("v0001", "v0002")}
    expected = {v: predict(n, EVENTS[:20]).tolist() for v, n in nets.items()}
    stop, bad = threading.Event(), []

    def serve():
        while not stop.is_set():
            for i, p in enumerate(handle.predict_many(EVENTS[:20])):
                if p.score != pytest.approx(expected[p.version][i]):
                    bad.append((i, p))

    threads = [threading.Thread(target=serve) for _ in range(3)]
    for t in threads:
        t.start()
    for k in range(40):
        v = ("v0002", "v0001")[k % 2]
        handle.apply(update("PROMOTED" if v == "v0002" else "ROLLED_BACK", "v0002", v))
    stop.set()
    for t in threads:
        t.join()
    assert not bad and handle.stats.swaps == 40


def test_bad_events_and_a_model_without_version_are_clear_errors(handle, registry, tmp_path):
    with pytest.raises(SchemaError, match="cannot score"):
        handle.predict({"event_id": "x", "slice": "a", "features": "not a map"})
    with pytest.raises(SchemaError, match="does not match its schema"):
        handle.serve({"event_id": "x", "slice": "a", "features": {"x": 1.0}})  # no event_time
    with pytest.raises(ServingError, match="no current version"):
        ModelHandle(load_settings(run_dir=tmp_path), "unknown", registry=registry, follow=False)
    handle.close()
    with pytest.raises(ServingError, match="closed"):
        handle.predict(EVENTS[0])
