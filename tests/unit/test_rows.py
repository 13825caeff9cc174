"""Records -> rows -> a real embedded ClickHouse -> back, for every table."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime

import pytest

from consumers import rows
from consumers.store import query
from schemas.codec import CODECS

T0 = 1_700_000_000_123  # epoch millis


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def sample_stat(**kw):
    r = {
        "stat_id": "m|eu|x|0|99", "model": "m", "slice": "eu", "feature": "x", "detector": "adwin",
        "count": 100, "mean": 0.5, "std": 0.1, "missing_rate": 0.02, "drift_score": 0.3,
        "detector_state": "stable", "topic": "drift.events", "partition": 1, "first_offset": 0,
        "last_offset": 99, "window_start_event_time": T0, "window_end_event_time": T0 + 5000,
        "worker_id": "w1", "emitted_at": T0 + 6000,
    }  # fmt: skip
    return {**r, **kw}


def sample_alert(**kw):
    r = {
        "alert_id": "alert-1", "alert_type": "DATA_DRIFT", "severity": "HIGH", "model": "m", "slice": "eu",
        "feature": "x", "detector": "adwin", "detector_params": {"delta": "0.002"}, "statistic": 1.5,
        "threshold": 1.0, "confidence": 0.99,
        "reference": {"count": 500, "mean": 0.0, "std": 1.0, "min": -3.0, "max": 3.0},
        "current": {"count": 200, "mean": 1.2, "std": 1.1, "min": -2.0, "max": 4.5},
        "topic": "drift.events", "partition": 2, "first_offset": 10, "last_offset": 709,
        "window_start_event_time": T0, "window_end_event_time": T0 + 60_000, "worker_id": "w1",
        "app_version": "0.1.0", "detected_at": T0 + 61_000,
    }  # fmt: skip
    return {**r, **kw}


def sample_dead_letter(**kw):
    r = {
        "original_key": b"eu", "original_value": b"\xc3\x01\x00\xffnot avro \xe2\x82",
        "reason": "event: corrupt Avro body", "error_type": "SchemaError", "source_topic": "drift.events",
        "source_partition": 0, "source_offset": 42, "source_timestamp": T0, "worker_id": "w1",
        "failed_at": T0 + 1,
    }  # fmt: skip
    return {**r, **kw}


def sample_request(**kw):
    r = {
        "request_id": "req-1", "alert_ids": ["alert-1", "alert-2"], "model": "m", "slices": ["eu"],
        "modules": ["adapter_eu"], "tier": "ADAPTER",
        "snapshot": {"topic": "drift.events", "ranges": [
            {"partition": 0, "start_offset": 0, "end_offset": 100},
            {"partition": 2, "start_offset": 5, "end_offset": 50}],
            "slice_filter": ["eu"], "labelled_only": True},
        "priority": 1, "policy_version": "p1", "created_at": T0,
    }  # fmt: skip
    return {**r, **kw}


def sample_result(**kw):
    r = {
        "request_id": "req-1", "model": "m", "new_version": "v2", "parent_version": "v1", "tier": "ADAPTER",
        "slices": ["eu"], "modules_updated": ["adapter_eu"], "params_updated": 1_000,
        "params_total": 1_000_000, "train_seconds": 2.5, "metric_name": "auc", "metric_before": 0.7,
        "metric_after": 0.8, "other_slices_max_regression": 0.001, "latency_ms": None,
        "decision": "PROMOTED", "reason": "improved", "artifact_uri": None, "finished_at": T0,
    }  # fmt: skip
    return {**r, **kw}


def sample_update() -> dict:
    return {
        "update_id": "m:v2:CANARY", "model": "m", "version": "v2", "previous_version": "v1",
        "current_version": "v1", "stage": "CANARY", "canary_fraction": 0.1, "slices": ["eu"],
        "reason": "shadow passed", "request_id": "r1", "statistic": 21.0, "events": 400,
        "candidate_loss": 0.45, "incumbent_loss": 0.61, "updated_at": 1_790_000_000_000,
    }  # fmt: skip


SAMPLES = {
    "ModelUpdate": sample_update,
    "DriftStat": sample_stat,
    "DriftAlert": sample_alert,
    "DeadLetter": sample_dead_letter,
    "RetrainRequest": sample_request,
    "RetrainResult": sample_result,
}


def roundtrip(record_name: str, record: dict) -> dict:
    codec = CODECS[record_name]
    return codec.decode(codec.encode(record))




@pytest.fixture
def store(ch):
    for table in rows.TABLES:
        ch.command(f"TRUNCATE TABLE {table}")
    return ch


def insert(client, spec: rows.TableSpec, records: list[dict]) -> None:
    client.insert(spec.table, [spec.to_row(r) for r in records], column_names=list(spec.columns))


def test_every_record_type_has_a_table_and_columns_match_the_ddl(store):
    assert set(rows.TABLE_FOR_RECORD) == set(CODECS) - {"Event"}
    for spec in rows.TABLE_FOR_RECORD.values():
        names, _ = query(store, f"SELECT * FROM {spec.table} LIMIT 0")
        assert list(spec.columns) == [n for n in names if n != "inserted_at"], spec.table
        assert len(spec.to_row(roundtrip(spec.record, SAMPLES[spec.record]()))) == len(spec.columns)


def test_table_for_topic_covers_the_sink_topics():
    from schemas.topics import Topics

    routes = rows.table_for_topic(Topics("x"))
    assert {t: s.table for t, s in routes.items()} == {
        "x.stats": "drift_stats",
        "x.alerts": "drift_alerts",
        "x.events.dlq": "dead_letters",
        "x.retrain.requests": "retrain_requests",
        "x.retrain.results": "retrain_results",
        "x.models": "model_rollouts",
    }


def test_stat_row_roundtrip(store):
    insert(store, rows.STATS, [roundtrip("DriftStat", sample_stat())])
    _, got = query(store, "SELECT stat_id, feature, count, partition, detector_state, window_end_event_time, "
                          "emitted_at FROM drift_stats FINAL")  # fmt: skip
    assert got == [("m|eu|x|0|99", "x", 100, 1, "stable", utc(T0 + 5000), utc(T0 + 6000))]


def test_alert_row_roundtrip_flattens_summaries_and_keeps_null_feature(store):
    insert(store, rows.ALERTS, [roundtrip("DriftAlert", sample_alert())])
    insert(store, rows.ALERTS, [roundtrip("DriftAlert", sample_alert(alert_id="perf-1", alert_type="PERFORMANCE_DRIFT",
                                                                     feature=None, detector_params={}))])  # fmt: skip
    _, got = query(store, "SELECT alert_id, alert_type, feature, detector_params, reference_count, current_mean, "
                          "current_max, detected_at FROM drift_alerts FINAL ORDER BY alert_id")  # fmt: skip
    assert got == [
        ("alert-1", "DATA_DRIFT", "x", {"delta": "0.002"}, 500, 1.2, 4.5, utc(T0 + 61_000)),
        ("perf-1", "PERFORMANCE_DRIFT", None, {}, 500, 1.2, 4.5, utc(T0 + 61_000)),
    ]


def test_alert_duplicates_collapse_with_final(store):
    record = roundtrip("DriftAlert", sample_alert())
    insert(store, rows.ALERTS, [record])
    insert(store, rows.ALERTS, [{**record, "detected_at": T0 + 99_000, "worker_id": "w2"}])  # a replay elsewhere
    assert query(store, "SELECT count() FROM drift_alerts FINAL")[1] == [(1,)]
    assert query(store, "SELECT uniqExact(alert_id) FROM drift_alerts")[1] == [(1,)]


def test_dead_letter_keeps_original_bytes(store):
    record = roundtrip("DeadLetter", sample_dead_letter())
    insert(store, rows.DEAD_LETTERS, [record, roundtrip("DeadLetter", sample_dead_letter(
        source_offset=43, original_key=None, original_value=None, source_timestamp=None))])  # fmt: skip
    _, got = query(store, "SELECT source_offset, original_key_b64, original_value_b64, value_size, value_preview, "
                          "source_timestamp, reason FROM dead_letters FINAL ORDER BY source_offset")  # fmt: skip
    first, second = got
    assert base64.b64decode(first[2]) == sample_dead_letter()["original_value"]
    assert base64.b64decode(first[1]) == b"eu"
    assert first[3] == len(sample_dead_letter()["original_value"])
    assert "not avro" in first[4] and first[5] == utc(T0) and first[6] == "event: corrupt Avro body"
    assert second[1:6] == (None, None, 0, "", None)
    # the bytes are recoverable in SQL too
    _, raw = query(store, "SELECT hex(base64Decode(original_value_b64)) FROM dead_letters WHERE source_offset = 42")
    assert bytes.fromhex(raw[0][0]) == sample_dead_letter()["original_value"]


def test_dead_letter_record_for_local_failures():
    err = ValueError("boom")
    rec = rows.dead_letter_record(key=None, value=b"\x00", error=err, topic="t", partition=3, offset=7,
                                  timestamp_ms=None, worker_id="w", failed_at_ms=T0)  # fmt: skip
    CODECS["DeadLetter"].validate(rec)
    row = rows.dead_letter_row(rec)
    assert row[:6] == ("t", 3, 7, 1, "boom", "ValueError") and row[7] == "AA=="


def test_preview_is_bounded_text():
    assert rows.preview(b"\xff" * 10_000) == "\ufffd" * rows.PREVIEW_CHARS
    assert rows.preview(None) == "" and rows.preview(b'{"a": 1}') == '{"a": 1}'


def test_request_row_roundtrip_flattens_snapshot(store):
    insert(store, rows.REQUESTS, [roundtrip("RetrainRequest", sample_request())])
    _, got = query(store, "SELECT request_id, alert_ids, slices, modules, tier, snapshot_topic, snapshot_partitions, "
                          "snapshot_start_offsets, snapshot_end_offsets, snapshot_slice_filter, "
                          "snapshot_labelled_only, created_at FROM retrain_requests FINAL")  # fmt: skip
    assert got == [("req-1", ["alert-1", "alert-2"], ["eu"], ["adapter_eu"], "ADAPTER", "drift.events", [0, 2],
                    [0, 5], [100, 50], ["eu"], True, utc(T0))]  # fmt: skip


def test_result_row_roundtrip(store):
    insert(store, rows.RESULTS, [roundtrip("RetrainResult", sample_result())])
    insert(store, rows.RESULTS, [roundtrip("RetrainResult", sample_result(
        request_id="req-2", decision="REJECTED", new_version=None, latency_ms=3.5, metric_after=math.nan))])  # fmt: skip
    _, got = query(store, "SELECT request_id, slices, modules_updated, params_updated, params_total, train_seconds, "
                          "metric_before, metric_after, other_slices_max_regression, decision, new_version, "
                          "latency_ms FROM retrain_results FINAL ORDER BY request_id")  # fmt: skip
    assert got[0] == ("req-1", ["eu"], ["adapter_eu"], 1000, 1_000_000, 2.5, 0.7, 0.8, 0.001, "PROMOTED", "v2", None)
    assert got[1][0] == "req-2" and got[1][9] == "REJECTED" and got[1][10] is None and got[1][11] == 3.5
    assert math.isnan(got[1][7])
