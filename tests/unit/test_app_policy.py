"""Pure parts of the worker: batch handling, when to checkpoint, what to evict, the rate arithmetic."""

from __future__ import annotations

import pytest

from deploy.throughput_report import rate_from_samples
from runtime.kafka_groups import Sample
from schemas.codec import EVENT
from streams.detectors import make_detector
from streams.monitor import Monitor, MonitorConfig
from streams.processing import CheckpointPolicy, Message, Outgoing, handle_batch


def monitor() -> Monitor:
    return Monitor({"mean": make_detector("adwin")}, MonitorConfig(worker_id="w1"))


def event(slice_: str, x: float = 1.0) -> bytes:
    return EVENT.encode(
        {
            "event_id": "e",
            "event_time": 1,
            "model": "m",
            "slice": slice_,
            "features": {"x": x},
            "categorical": {},
        }
    )


def test_a_batch_shares_one_outgoing_and_remembers_each_slices_partition():
    m = monitor()
    msgs = [Message(b"a", event("a"), "t", 0, 5, None), Message(b"b", event("b"), "t", 2, 9, None),
            Message(b"a", b"junk", "t", 0, 6, None)]  # fmt: skip
    out = handle_batch(m, msgs, now_ms=0)
    assert out.touched == {("m", "a"): 0, ("m", "b"): 2}
    assert len(out.dead_letters) == 1 and out.alerts == []
    assert m.slices[("m", "a")].last_offset == {("t", 0): 5}


def policy(**kw) -> CheckpointPolicy:
    args = {"every_events": 10, "every_seconds": 5.0, "idle_seconds": 60.0, "idle_events": 1000, "now": 0.0}
    return CheckpointPolicy(**{**args, **kw})


def run(m: Monitor, p: CheckpointPolicy, slice_: str, n: int, now: float, offset0: int = 0) -> Outgoing:
    out = handle_batch(m, [Message(None, event(slice_), "t", 0, offset0 + i, None) for i in range(n)], 0)
    p.observed(m, out, n, now)
    return out


def test_checkpoint_due_by_events_of_a_slice_or_by_time():
    m, p = monitor(), policy()
    run(m, p, "a", 9, now=1.0)
    assert not p.due(1.0)
    run(m, p, "a", 1, now=1.0, offset0=9)
    assert p.due(1.0)
    p.checkpointed(1.0)
    for st in m.slices.values():
        st.events_since_snapshot = 0
    assert not p.due(5.9) and p.due(6.0), (
        "the timer fires even with nothing to write: idle slices are evicted then"
    )


def test_an_alert_makes_a_checkpoint_due():
    m, p = monitor(), policy()
    p.observed(m, Outgoing(alerts=[(b"k", b"v")]), 1, now=0.0)
    assert p.due(0.0)


def test_idle_by_time_or_by_events_of_other_slices():
    m, p = monitor(), policy(idle_seconds=60.0, idle_events=100)
    run(m, p, "a", 1, now=0.0)
    run(m, p, "b", 1, now=30.0)
    assert p.idle(59.0) == []
    assert p.idle(60.0) == [("m", "a")]
    run(m, p, "c", 100, now=31.0)
    assert set(p.idle(31.0)) == {("m", "a"), ("m", "b")}
    p.forget([("m", "a")])
    assert ("m", "a") not in p.home and p.on_partitions({0}) == [("m", "b"), ("m", "c")]


def test_rate_from_samples_ignores_startup_and_stops_at_the_last_commit():
    samples = [Sample(1.0, 0), Sample(2.0, 0), Sample(3.0, 10_000), Sample(4.0, 30_000), Sample(5.0, 50_000),
               Sample(5.1, 50_000)]  # fmt: skip
    r = rate_from_samples(samples, 50_000)
    assert r["events_per_second"] == pytest.approx(20_000)
    assert r["startup_seconds"] == 3.0 and r["total_seconds"] == 5.0


def test_rate_from_samples_refuses_an_unfinished_run():
    with pytest.raises(ValueError):
        rate_from_samples([Sample(1.0, 10)], 20)
