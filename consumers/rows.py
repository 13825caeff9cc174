"""Decoded records -> ClickHouse row tuples, one pure function per table.

Input records are dicts as :meth:`schemas.codec.RecordCodec.decode` returns them:
timestamps are epoch-millisecond ints, which clickhouse-connect writes unchanged as
``DateTime64(3)`` ticks (same result on chdb and on a server). Column lists match
``deploy/clickhouse/*.sql`` minus ``inserted_at``, which the table fills.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.codec import CODECS, RecordCodec
from schemas.topics import Topics

Record = dict[str, Any]
Row = tuple[Any, ...]

PREVIEW_CHARS = 1024


@dataclass(frozen=True)
class TableSpec:
    """How one record type lands in its table."""

    record: str  # Avro record name
    table: str
    columns: tuple[str, ...]
    to_row: Callable[[Record], Row]
    replay_key: Callable[[Record], str] | None = None  # id that makes a replay an exact duplicate

    @property
    def codec(self) -> RecordCodec:
        return CODECS[self.record]


# --------------------------------------------------------------------------------------
# drift_stats
# --------------------------------------------------------------------------------------

STAT_COLUMNS = (
    "stat_id", "schema_version", "model", "slice", "feature", "detector", "count", "mean", "std",
    "missing_rate", "drift_score", "detector_state", "topic", "partition", "first_offset", "last_offset",
    "window_start_event_time", "window_end_event_time", "worker_id", "emitted_at",
)  # fmt: skip


def stat_row(r: Record) -> Row:
    return tuple(r[c] for c in STAT_COLUMNS)


# --------------------------------------------------------------------------------------
# drift_alerts
# --------------------------------------------------------------------------------------

_SUMMARY_FIELDS = ("count", "mean", "std", "min", "max")
_ALERT_HEAD = (
    "alert_id", "schema_version", "alert_type", "severity", "model", "slice", "feature", "detector",
    "detector_params", "statistic", "threshold", "confidence",
)  # fmt: skip
_ALERT_TAIL = (
    "topic", "partition", "first_offset", "last_offset", "window_start_event_time",
    "window_end_event_time", "worker_id", "app_version", "detected_at",
)  # fmt: skip
ALERT_COLUMNS = (
    _ALERT_HEAD
    + tuple(f"reference_{f}" for f in _SUMMARY_FIELDS)
    + tuple(f"current_{f}" for f in _SUMMARY_FIELDS)
    + _ALERT_TAIL
)


def alert_row(r: Record) -> Row:
    head = tuple(dict(r[c]) if c == "detector_params" else r[c] for c in _ALERT_HEAD)
    reference = tuple(r["reference"][f] for f in _SUMMARY_FIELDS)
    current = tuple(r["current"][f] for f in _SUMMARY_FIELDS)
    return head + reference + current + tuple(r[c] for c in _ALERT_TAIL)


# --------------------------------------------------------------------------------------
# dead_letters
# --------------------------------------------------------------------------------------

DEAD_LETTER_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "schema_version", "reason", "error_type",
    "original_key_b64", "original_value_b64", "value_size", "value_preview", "source_timestamp",
    "worker_id", "failed_at",
)  # fmt: skip


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def preview(data: bytes | None, limit: int = PREVIEW_CHARS) -> str:
    """The bytes as text for people: UTF-8 with replacement characters, truncated."""
    return "" if not data else data[: limit * 4].decode("utf-8", errors="replace")[:limit]


def dead_letter_row(r: Record) -> Row:
    value = r["original_value"]
    return (
        r["source_topic"],
        r["source_partition"],
        r["source_offset"],
        r["schema_version"],
        r["reason"],
        r["error_type"],
        b64(r["original_key"]),
        b64(value),
        len(value) if value else 0,
        preview(value),
        r["source_timestamp"],
        r["worker_id"],
        r["failed_at"],
    )


def dead_letter_record(
    *,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    worker_id: str,
    failed_at_ms: int,
) -> Record:
    """A DeadLetter record for a message that failed here (e.g. in the sink)."""
    return {
        "schema_version": CODECS["DeadLetter"].version,
        "original_key": key,
        "original_value": value,
        "reason": str(error) or type(error).__name__,
        "error_type": type(error).__name__,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "source_timestamp": timestamp_ms,
        "worker_id": worker_id,
        "failed_at": failed_at_ms,
    }


# --------------------------------------------------------------------------------------
# retrain_requests / retrain_results
# --------------------------------------------------------------------------------------

REQUEST_COLUMNS = (
    "request_id", "schema_version", "alert_ids", "model", "slices", "modules", "tier", "snapshot_topic",
    "snapshot_partitions", "snapshot_start_offsets", "snapshot_end_offsets", "snapshot_slice_filter",
    "snapshot_labelled_only", "priority", "policy_version", "created_at",
)  # fmt: skip


def request_row(r: Record) -> Row:
    snap = r["snapshot"]
    ranges = snap["ranges"]
    return (
        r["request_id"],
        r["schema_version"],
        list(r["alert_ids"]),
        r["model"],
        list(r["slices"]),
        list(r["modules"]),
        r["tier"],
        snap["topic"],
        [x["partition"] for x in ranges],
        [x["start_offset"] for x in ranges],
        [x["end_offset"] for x in ranges],
        list(snap["slice_filter"]),
        bool(snap["labelled_only"]),
        r["priority"],
        r["policy_version"],
        r["created_at"],
    )


RESULT_COLUMNS = (
    "request_id", "schema_version", "model", "new_version", "parent_version", "tier", "slices",
    "modules_updated", "params_updated", "params_total", "train_seconds", "metric_name", "metric_before",
    "metric_after", "other_slices_max_regression", "latency_ms", "decision", "reason", "artifact_uri",
    "finished_at", "cause", "module_scores", "checks",
)  # fmt: skip
_LISTS, _MAPS = ("slices", "modules_updated"), ("module_scores", "checks")


def result_row(r: Record) -> Row:
    return tuple(
        list(r[c]) if c in _LISTS else dict(r[c]) if c in _MAPS else r[c] for c in RESULT_COLUMNS
    )


# --------------------------------------------------------------------------------------
# model_rollouts
# --------------------------------------------------------------------------------------

ROLLOUT_COLUMNS = (
    "update_id", "schema_version", "model", "version", "previous_version", "current_version", "stage",
    "canary_fraction", "slices", "decision", "reason", "request_id", "statistic", "events", "candidate_loss",
    "incumbent_loss", "updated_at",
)  # fmt: skip


def rollout_row(r: Record) -> Row:
    return tuple(list(r[c]) if c == "slices" else r[c] for c in ROLLOUT_COLUMNS)


# --------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------

STATS = TableSpec("DriftStat", "drift_stats", STAT_COLUMNS, stat_row)
ALERTS = TableSpec("DriftAlert", "drift_alerts", ALERT_COLUMNS, alert_row, replay_key=lambda r: r["alert_id"])
DEAD_LETTERS = TableSpec("DeadLetter", "dead_letters", DEAD_LETTER_COLUMNS, dead_letter_row)
REQUESTS = TableSpec("RetrainRequest", "retrain_requests", REQUEST_COLUMNS, request_row)
RESULTS = TableSpec("RetrainResult", "retrain_results", RESULT_COLUMNS, result_row)
ROLLOUTS = TableSpec(
    "ModelUpdate", "model_rollouts", ROLLOUT_COLUMNS, rollout_row, replay_key=lambda r: r["update_id"]
)

# Avro record name -> its table
TABLE_FOR_RECORD: dict[str, TableSpec] = {s.record: s for s in (STATS, ALERTS, DEAD_LETTERS, REQUESTS, RESULTS, ROLLOUTS)}
TABLES: dict[str, TableSpec] = {s.table: s for s in TABLE_FOR_RECORD.values()}


def table_for_topic(topics: Topics) -> dict[str, TableSpec]:
    """Topic name -> the spec of the records it carries, for every topic the sink reads."""
    return {
        topics.stats: STATS,
        topics.alerts: ALERTS,
        topics.dlq: DEAD_LETTERS,
        topics.retrain_requests: REQUESTS,
        topics.retrain_results: RESULTS,
        topics.models: ROLLOUTS,
    }
