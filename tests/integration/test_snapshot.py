"""Snapshot reader against the real broker: exact offset ranges, labelled_only, bad bytes skipped;
and `driftctl train` fitting a first version from a topic."""

from __future__ import annotations

import argparse
import json

import pytest
from confluent_kafka import Producer

from retrain_jobs.registry import Registry
from retrain_jobs.snapshot import latest_ranges, read_snapshot
from schemas.codec import EVENT
from schemas.events import normalize_event

pytestmark = pytest.mark.integration


def event(i: int, partition: int, labelled: bool) -> dict:
    return normalize_event({
        "event_id": f"p{partition}-{i}", "event_time": 1_790_000_000_000 + i, "model": "m",
        "slice": f"s{partition}", "features": {"x": float(i % 13), "y": None if i % 7 == 0 else float(i % 5)},
        "categorical": {"c": "ab"[i % 2]}, "label": (i // 3) % 2 if labelled else None,
    })


def produce(settings, topic: str, per_partition: int = 60) -> dict[int, list]:
    """Per partition, in offset order: an event dict, or None for a message that is not an event."""
    producer = Producer(settings.producer_config())
    written: dict[int, list] = {}
    for p in range(3):
        written[p] = []
        for i in range(per_partition):
            if i % 10 == 9:
                producer.produce(topic, value=b"\x00garbage", partition=p)
                written[p].append(None)
                continue
            e = event(i, p, labelled=i % 4 != 0)
            value = json.dumps(e).encode() if i % 3 == 0 else EVENT.encode(e)  # JSON and Avro both
            producer.produce(topic, key=e["slice"].encode(), value=value, partition=p)
            written[p].append(e)
    assert producer.flush(30) == 0
    return written


def test_read_snapshot_reads_exact_ranges(kafka_settings, scratch_topic):
    topic = scratch_topic(3)
    written = produce(kafka_settings, topic)
    ranges = [{"partition": 0, "start_offset": 5, "end_offset": 25},
              {"partition": 2, "start_offset": 40, "end_offset": 60},
              {"partition": 1, "start_offset": 7, "end_offset": 7}]  # empty range
    snap = {"topic": topic, "ranges": ranges, "slice_filter": ["s0"], "labelled_only": True}
    got = read_snapshot(kafka_settings, snap, timeout=30)
    expect = [e for e in written[0][5:25] + written[2][40:60] if e is not None and e["label"] is not None]
    assert [e["event_id"] for e in got] == [e["event_id"] for e in expect]  # partition, then offset order
    assert {e["slice"] for e in got} == {"s0", "s2"}  # every slice in the ranges; the job applies the filter
    by_id = {e["event_id"]: e for e in got}
    assert by_id["p0-6"]["features"] == written[0][6]["features"]
    everything = read_snapshot(kafka_settings, {**snap, "labelled_only": False}, timeout=30)
    assert len(everything) == sum(e is not None for e in written[0][5:25] + written[2][40:60])
    again = read_snapshot(kafka_settings, snap, timeout=30)
    assert [e["event_id"] for e in again] == [e["event_id"] for e in got]  # reproducible, whatever the fetch order


def test_latest_ranges_and_train_command(kafka_settings, scratch_topic, tmp_path, capsys):
    from deploy.cli_retrain import cmd_train

    topic = scratch_topic(3)
    produce(kafka_settings, topic, per_partition=120)
    assert latest_ranges(kafka_settings, topic, 50) == [
        {"partition": p, "start_offset": 70, "end_offset": 120} for p in range(3)]
    assert latest_ranges(kafka_settings, topic)[0] == {"partition": 0, "start_offset": 0, "end_offset": 120}
    settings = kafka_settings.model_copy(update={"registry_dir": tmp_path, "retrain_bootstrap_epochs": 3})
    args = argparse.Namespace(model="m", topic=topic, max_events=None, from_beginning=True, timeout=30.0)
    assert cmd_train(settings, args) == 0
    assert "trained m v0001" in capsys.readouterr().out
    manifest = Registry(tmp_path).current("m")
    assert manifest.version == "v0001" and manifest.snapshot["topic"] == topic
    assert {"adapter.s0", "adapter.s1", "adapter.s2", "encoder.x", "encoder.y", "encoder.c"} <= set(manifest.modules)
    labelled = 3 * sum(1 for i in range(120) if i % 10 != 9 and i % 4 != 0)
    m = manifest.metrics
    assert m["train_events"] + m["val_events"] + m["holdout_events"] == labelled
