"""A small, known monitoring story written into a ClickHouse store, for the query tests.

Two hours of event time (T0 .. T0+119 min), slices eu-west, us-east, ap-south, features
amount and age, a stat per (slice, feature) per minute. What happened:

* eu-west/amount shifts at minute 60: its drift score jumps; DATA_DRIFT alerts at
  minutes 62 (window from 55), 90 and 115; the minute-90 alert is inserted twice (a replay).
* us-east: a PERFORMANCE_DRIFT alert (feature NULL) at minute 20, long over by the end.
* ap-south/amount: a DATA_QUALITY alert at minute 100.
* The router asked for an ADAPTER retrain from the first two eu-west alerts (promoted,
  1,000 of 1,000,000 parameters, 2.5 s) and a MODULE retrain from the us-east one (no
  result yet).
* Dead letters: two undecodable events with one reason (one inserted twice), one other.
* The rollout of v2 (req-eu): CANDIDATE and SHADOW at minute 95, CANARY (10% of eu-west) at
  101, PROMOTED at 108 (the CANARY record inserted twice), then the watch rolled it back to v1
  at 118: its live loss went above v1's on the watched events.
"""

from __future__ import annotations

from typing import Any

from consumers import rows
from schemas.codec import CODECS

T0 = 1_790_000_000_000 - (1_790_000_000_000 % 3_600_000)  # on an hour boundary
MIN = 60_000
SLICES = ("eu-west", "us-east", "ap-south")
FEATURES = ("amount", "age")
LAST_MINUTE = 119


def _roundtrip(record_name: str, record: dict[str, Any]) -> dict[str, Any]:
    codec = CODECS[record_name]
    return codec.decode(codec.encode(record))  # fills schema_version like the real records


def stat(slice_: str, feature: str, minute: int) -> dict[str, Any]:
    drifting = slice_ == "eu-west" and feature == "amount" and minute >= 60
    score = 40.0 + minute if drifting else 0.5 + (minute % 7) / 10
    return _roundtrip("DriftStat", {
        "stat_id": f"m|{slice_}|{feature}|stat|{minute}", "model": "m", "slice": slice_, "feature": feature,
        "detector": "adwin", "count": 600, "mean": 12.0 + (4.0 if drifting else 0.0), "std": 2.0,
        "missing_rate": 0.0, "drift_score": score, "detector_state": "drift" if drifting else "stable",
        "topic": "drift.events", "partition": SLICES.index(slice_), "first_offset": minute * 600,
        "last_offset": minute * 600 + 599, "window_start_event_time": T0 + minute * MIN,
        "window_end_event_time": T0 + minute * MIN + MIN - 1, "worker_id": "w1",
        "emitted_at": T0 + minute * MIN + MIN,
    })  # fmt: skip


def alert(alert_id: str, slice_: str, feature: str | None, alert_type: str, severity: str,
          start_minute: int, end_minute: int) -> dict[str, Any]:  # fmt: skip
    return _roundtrip("DriftAlert", {
        "alert_id": alert_id, "alert_type": alert_type, "severity": severity, "model": "m", "slice": slice_,
        "feature": feature, "detector": "adwin", "detector_params": {"delta": "1e-05", "channel": "mean"},
        "statistic": 5.0 + end_minute / 10, "threshold": 3.0, "confidence": 0.999,
        "reference": {"count": 500, "mean": 12.0, "std": 2.0, "min": 5.0, "max": 19.0},
        "current": {"count": 200, "mean": 16.0, "std": 2.1, "min": 9.0, "max": 23.0},
        "topic": "drift.events", "partition": SLICES.index(slice_), "first_offset": start_minute * 600,
        "last_offset": end_minute * 600, "window_start_event_time": T0 + start_minute * MIN,
        "window_end_event_time": T0 + end_minute * MIN, "worker_id": "w1", "app_version": "0.1.0",
        "detected_at": T0 + end_minute * MIN + 500,
    })  # fmt: skip


ALERTS = (
    alert("a-eu-1", "eu-west", "amount", "DATA_DRIFT", "HIGH", 55, 62),
    alert("a-eu-2", "eu-west", "amount", "DATA_DRIFT", "MEDIUM", 85, 90),
    alert("a-eu-3", "eu-west", "amount", "DATA_DRIFT", "HIGH", 110, 115),
    alert("a-us-1", "us-east", None, "PERFORMANCE_DRIFT", "MEDIUM", 10, 20),
    alert("a-ap-1", "ap-south", "amount", "DATA_QUALITY", "LOW", 95, 100),
)


def request(request_id: str, alert_ids: list[str], slice_: str, tier: str, modules: list[str], minute: int):
    return _roundtrip("RetrainRequest", {
        "request_id": request_id, "alert_ids": alert_ids, "model": "m", "slices": [slice_], "modules": modules,
        "tier": tier, "snapshot": {"topic": "drift.events", "ranges": [
            {"partition": SLICES.index(slice_), "start_offset": 0, "end_offset": minute * 600}],
            "slice_filter": [slice_], "labelled_only": True},
        "priority": 1, "policy_version": "p1", "created_at": T0 + minute * MIN,
    })  # fmt: skip


REQUESTS = (
    request("req-eu", ["a-eu-1", "a-eu-2"], "eu-west", "ADAPTER", ["adapter_eu-west"], 92),
    request("req-us", ["a-us-1"], "us-east", "MODULE", ["head"], 25),
)

RESULTS = (
    _roundtrip("RetrainResult", {
        "request_id": "req-eu", "model": "m", "new_version": "v2", "parent_version": "v1", "tier": "ADAPTER",
        "slices": ["eu-west"], "modules_updated": ["adapter_eu-west"], "params_updated": 1_000,
        "params_total": 1_000_000, "train_seconds": 2.5, "metric_name": "log_loss", "metric_before": 0.62,
        "metric_after": 0.41, "other_slices_max_regression": 0.002, "latency_ms": 1.2,
        "decision": "PROMOTED", "reason": "affected slices improved, others within tolerance",
        "artifact_uri": "file:///registry/m/v2", "finished_at": T0 + 95 * MIN,
    }),
    _roundtrip("RetrainResult", {  # an earlier job that bought nothing: wasted seconds
        "request_id": "req-eu-old", "model": "m", "new_version": None, "parent_version": "v1", "tier": "ADAPTER",
        "slices": ["eu-west"], "modules_updated": ["adapter_eu-west"], "params_updated": 1_000,
        "params_total": 1_000_000, "train_seconds": 1.5, "metric_name": "log_loss", "metric_before": 0.40,
        "metric_after": 0.40, "other_slices_max_regression": 0.0, "latency_ms": 1.1, "decision": "REJECTED",
        "reason": "min_gain: eu-west log_loss gain +0.0000 < 0.01", "artifact_uri": None,
        "finished_at": T0 + 50 * MIN, "cause": "MIN_GAIN",
    }),
    _roundtrip("RetrainResult", {  # triage: the data drift did not hurt, no job (avoided seconds)
        "request_id": "req-ap-skip", "model": "m", "new_version": None, "parent_version": "v1", "tier": "ADAPTER",
        "slices": ["ap-south"], "modules_updated": [], "params_updated": 0, "params_total": 0,
        "train_seconds": 0.0, "metric_name": "log_loss", "metric_before": 0.3, "metric_after": 0.3,
        "other_slices_max_regression": 0.0, "latency_ms": None, "decision": "SKIPPED",
        "reason": "triage: no significant harm", "artifact_uri": None, "finished_at": T0 + 101 * MIN,
        "cause": "NO_HARM", "checks": {"triage.delta": 0.004, "triage.ci_low": -0.02, "triage.ci_high": 0.03},
    }),
)  # fmt: skip


def rollout(stage: str, minute: int, current: str, **kw: Any) -> dict[str, Any]:
    return _roundtrip("ModelUpdate", {
        "update_id": f"m:v2:{stage}", "model": "m", "version": "v2", "previous_version": "v1",
        "current_version": current, "stage": stage, "canary_fraction": 0.0, "slices": ["eu-west"],
        "decision": None, "reason": f"{stage.lower()} of v2", "request_id": "req-eu", "statistic": None,
        "events": 0, "candidate_loss": None, "incumbent_loss": None, "updated_at": T0 + minute * MIN, **kw,
    })  # fmt: skip


ROLLOUTS = (
    rollout("CANDIDATE", 95, "v1"),
    rollout("SHADOW", 95, "v1"),
    rollout("CANARY", 101, "v1", canary_fraction=0.1, statistic=21.5, events=640, candidate_loss=0.43,
            incumbent_loss=0.61),
    rollout("PROMOTED", 108, "v2", decision="PROMOTED", statistic=48.0, events=910, candidate_loss=0.42,
            incumbent_loss=0.60),
    rollout("ROLLED_BACK", 118, "v1", decision="ROLLED_BACK", statistic=33.0, events=700, candidate_loss=0.66,
            incumbent_loss=0.52),
)


def dead_letter(offset: int, reason: str, error_type: str) -> dict[str, Any]:
    return _roundtrip("DeadLetter", {
        "original_key": b"eu-west", "original_value": b'{"event_id": 1, "broken', "reason": reason,
        "error_type": error_type, "source_topic": "drift.events", "source_partition": 0,
        "source_offset": offset, "source_timestamp": T0 + offset, "worker_id": "w1",
        "failed_at": T0 + offset * MIN,
    })  # fmt: skip


DEAD_LETTERS = (
    dead_letter(7, "not valid JSON and not Avro single-object encoding", "SchemaError"),
    dead_letter(8, "not valid JSON and not Avro single-object encoding", "SchemaError"),
    dead_letter(9, "event_time: expected epoch milliseconds", "SchemaError"),
)


def populate(client: Any) -> None:
    """Insert the story, replays included, the way the sink does (table by table)."""
    stats = [stat(s, f, m) for m in range(LAST_MINUTE + 1) for s in SLICES for f in FEATURES]
    batches = (
        (rows.STATS, stats),
        (rows.ALERTS, list(ALERTS)),
        (rows.ALERTS, [ALERTS[1]]),  # the replay
        (rows.REQUESTS, list(REQUESTS)),
        (rows.RESULTS, list(RESULTS)),
        (rows.DEAD_LETTERS, list(DEAD_LETTERS)),
        (rows.DEAD_LETTERS, [DEAD_LETTERS[0]]),  # a replay
        (rows.ROLLOUTS, list(ROLLOUTS)),
        (rows.ROLLOUTS, [ROLLOUTS[2]]),  # a replay
    )
    for spec, records in batches:
        client.insert(spec.table, [spec.to_row(r) for r in records], column_names=list(spec.columns))
