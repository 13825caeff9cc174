"""The optional Kafka-engine path: its views turn decoded records into the sink's exact rows."""

from __future__ import annotations

import base64
import importlib.util
import re
from importlib import resources

import pytest

from consumers import rows
from consumers.store import query, split_statements
from schemas.codec import CODECS
from tests.unit import monitoring_data as story

FOLDER = resources.files("deploy").joinpath("clickhouse", "kafka_engine")
RECORDS = {
    rows.STATS: [story.stat("eu-west", "amount", 61), story.stat("us-east", "age", 3)],
    rows.ALERTS: list(story.ALERTS),
    rows.DEAD_LETTERS: list(story.DEAD_LETTERS) + [{**story.DEAD_LETTERS[0], "original_key": None,
                                                    "source_offset": 99, "source_timestamp": None}],
    rows.REQUESTS: list(story.REQUESTS),
    rows.RESULTS: list(story.RESULTS) + [{**story.RESULTS[0], "request_id": "r2", "new_version": None,
                                          "latency_ms": None, "artifact_uri": None, "decision": "REJECTED"},
                   {**story.RESULTS[0], "request_id": "r3", "decision": "SKIPPED", "cause": "no_harm",
                    "module_scores": {"adapter.eu": 0.9}, "checks": {"triage_delta": 0.01}}],
    rows.ROLLOUTS: [
        {"schema_version": 2, "update_id": "m:v2:SHADOW", "model": "m", "version": "v2", "previous_version": "v1",
         "current_version": "v1", "stage": "SHADOW", "canary_fraction": 0.0, "slices": ["eu"], "decision": None,
         "reason": "gate passed", "request_id": "r1", "statistic": None, "events": 0, "candidate_loss": None,
         "incumbent_loss": None, "updated_at": 1_790_000_000_000},
        {"schema_version": 2, "update_id": "m:v2:PROMOTED", "model": "m", "version": "v2", "previous_version": "v1",
         "current_version": "v2", "stage": "PROMOTED", "canary_fraction": 0.0, "slices": ["eu"],
         "decision": "PROMOTED", "reason": "better", "request_id": "r1", "statistic": 25.5, "events": 812,
         "candidate_loss": 0.41, "incumbent_loss": 0.58, "updated_at": 1_790_000_100_000},
    ],
}  # fmt: skip


def udf():
    spec = importlib.util.spec_from_file_location("driftwatch_decode", str(FOLDER.joinpath("driftwatch_decode.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def views() -> dict[str, str]:
    """Target table -> the SELECT of its materialized view."""
    text = FOLDER.joinpath("kafka_engine.sql").read_text()
    found = {}
    for statement in split_statements(text):
        m = re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS \w+ TO (\w+) AS\s+(SELECT.*)", statement, re.DOTALL)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_the_udf_decodes_every_record_type_and_reports_garbage():
    decode = udf().decode_line
    alert = story.ALERTS[3]
    line = decode("DriftAlert\t" + base64.b64encode(CODECS["DriftAlert"].encode(alert)).decode() + "\n")
    assert '"alert_id": "a-us-1"' in line and '"feature": null' in line
    assert '"_error"' in decode("DriftAlert\t" + base64.b64encode(b"\xc3\x01garbage").decode())
    assert '"_error"' in decode("NoSuchRecord\tAAAA")


def test_there_is_a_queue_and_a_view_for_every_sink_table():
    text = FOLDER.joinpath("kafka_engine.sql").read_text()
    assert set(views()) == {spec.table for spec in RECORDS}
    for spec in RECORDS:
        assert f"CREATE TABLE IF NOT EXISTS {spec.table}_queue (value String)" in text
        assert f"driftwatch_decode('{spec.record}', base64Encode(value))" in text


@pytest.mark.parametrize("spec", list(RECORDS), ids=lambda s: s.table)
def test_each_view_gives_the_sinks_rows(ch, spec):
    decode = udf().decode_line
    scratch = f"decoded_{spec.table}"
    ch.command(f"CREATE TABLE IF NOT EXISTS {scratch} (j String) ENGINE = Memory")
    lines = [decode(f"{spec.record}\t{base64.b64encode(spec.codec.encode(r)).decode()}") for r in RECORDS[spec]]
    lines.append(decode(f"{spec.record}\t{base64.b64encode(b'not a record').decode()}"))  # skipped by the view
    ch.insert(scratch, [(line,) for line in lines], column_names=["j"])
    select = re.sub(r"FROM \(SELECT driftwatch_decode\(.*?\) AS j FROM \w+\)", f"FROM {scratch}",
                    views()[spec.table], flags=re.DOTALL)  # fmt: skip
    _, from_view = query(ch, select)

    ch.insert(spec.table, [spec.to_row(r) for r in RECORDS[spec]], column_names=list(spec.columns))
    _, from_sink = query(ch, f"SELECT {', '.join(spec.columns)} FROM {spec.table}")
    assert len(from_view) == len(RECORDS[spec])
    assert sorted(from_view, key=repr) == sorted(from_sink, key=repr)
