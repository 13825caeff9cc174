"""The snapshot's event filter and the first version's reference snapshot (no broker: the
partition listing is faked; reading from Kafka is tests/integration/test_snapshot.py)."""

from __future__ import annotations

import pytest

from retrain_jobs import snapshot as snapshot_mod
from retrain_jobs.snapshot import reference_snapshot, snapshot_filter
from schemas.errors import ConfigError
from schemas.settings import load_settings


def test_filter_keeps_labelled_events_before_the_cut():
    events = [{"event_time": t, "label": y} for t, y in ((10, 1), (20, None), (30, 0), (40, 1))]
    assert [e["event_time"] for e in events if snapshot_filter({})(e)] == [10, 30, 40]
    assert [e["event_time"] for e in events if snapshot_filter({"labelled_only": False})(e)] == [10, 20, 30, 40]
    cut = snapshot_filter({"labelled_only": True, "before_event_time": 30})
    assert [e["event_time"] for e in events if cut(e)] == [10]
    assert [e["event_time"] for e in events if snapshot_filter({"before_event_time": None})(e)] == [10, 30, 40]
    for bad in ("30", 3.5, True):
        with pytest.raises(ConfigError, match="before_event_time: expected epoch milliseconds"):
            snapshot_filter({"before_event_time": bad})


def test_reference_snapshot_ends_before_the_request_and_carries_the_onset(monkeypatch):
    retained = [{"partition": 0, "start_offset": 100, "end_offset": 900},
                {"partition": 1, "start_offset": 0, "end_offset": 500},
                {"partition": 2, "start_offset": 0, "end_offset": 50}]  # fmt: skip
    monkeypatch.setattr(snapshot_mod, "latest_ranges", lambda settings, topic: retained)
    request_snapshot = {"topic": "t", "ranges": [{"partition": 0, "start_offset": 400, "end_offset": 900},
                                                 {"partition": 1, "start_offset": 480, "end_offset": 500}],
                        "slice_filter": ["eu"], "labelled_only": True}  # fmt: skip
    ref = reference_snapshot(load_settings(), request_snapshot, 200, before_event_time=1_790_000_000_000)
    assert ref == {
        "topic": "t", "slice_filter": [], "labelled_only": True, "before_event_time": 1_790_000_000_000,
        "ranges": [{"partition": 0, "start_offset": 100, "end_offset": 300},
                   {"partition": 1, "start_offset": 0, "end_offset": 200},
                   {"partition": 2, "start_offset": 0, "end_offset": 50}],
    }  # fmt: skip
    assert "before_event_time" not in reference_snapshot(load_settings(), request_snapshot, 200)
