"""The batch path (each detector scans its values of a batch in one call, the moments between
channels played in event order: streams/batch.py) makes exactly the records one event at a
time does, whatever the batch size."""

from __future__ import annotations

import pytest

from deploy.scenarios import Drift, Scenario
from schemas.settings import load_settings
from streams.config import prototypes
from streams.monitor import Monitor, MonitorConfig

PROTOS = prototypes(load_settings())
SCENARIO = Scenario(
    slices=("a", "b", "c"),
    events_per_slice=3000,
    drifts=(
        Drift("a", "amount", 1200, "mean", 1.0),
        Drift("a", "amount", 1250, "missing", 2.0),  # two channels of one group fire close together
        Drift("b", "latency_ms", 1400, "scale", 2.0),
        Drift("b", "device", 1100, "category_mix", 3.0),
        Drift("c", None, 1000, "error_rate", 3.0),
        Drift("c", "latency_ms", 1500, "out_of_range", 0.5),
    ),
    seed=5,
)


def _records(batch: int) -> tuple[list, list]:
    monitor = Monitor(PROTOS, MonitorConfig(stats_every_events=400, cooldown_events=300, worker_id="w"))
    events = list(SCENARIO.events())
    alerts, stats = [], []
    for start in range(0, len(events), batch):
        items = [(ev, "t", 0, start + j) for j, ev in enumerate(events[start:start + batch])]
        out = monitor.observe_batch(items, 0)
        assert out.failed == []
        alerts += out.alerts
        stats += out.stats
    return alerts, stats


@pytest.fixture(scope="module")
def one_at_a_time() -> tuple[list, list]:
    return _records(1)


@pytest.mark.parametrize("batch", [7, 500, 5000])
def test_batches_make_the_same_records_as_single_events(one_at_a_time, batch):
    alerts, stats = _records(batch)
    assert len(one_at_a_time[0]) >= 5  # the drifts were found: there is something to compare
    assert alerts == one_at_a_time[0]
    assert stats == one_at_a_time[1]
    assert {s["detector_state"] for s in stats} == {"stable", "drift"}
