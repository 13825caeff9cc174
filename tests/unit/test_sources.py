"""Users' own events (JSON, or Avro with their .avsc) mapped onto the canonical Event; bad ones to the DLQ."""

from __future__ import annotations

import io
import json
import struct

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.codec import DEAD_LETTER, EVENT
from schemas.errors import ConfigError, SchemaError
from schemas.settings import load_settings
from streams.config import build_monitor
from streams.model_config import parse_model_config
from streams.processing import Message, handle_batch
from streams.sources import build_sources

JSON_SOURCE = {
    "topic": "payments",
    "event_id": "txn.id",
    "event_time": "ts",
    "event_time_unit": "s",
    "model": {"value": "fraud"},
    "slice": ["geo.country", "channel"],
    "features": {"amount": "txn.amount", "risk": "scores.risk"},
    "categorical": ["device"],
    "prediction": "scores.p_fraud",
    "label": "is_fraud",
}
RECORD = {
    "txn": {"id": "t-1", "amount": 12.5}, "ts": 1_790_000_000, "geo": {"country": "fr"}, "channel": "web",
    "scores": {"risk": 3, "p_fraud": 0.83}, "device": "ios", "is_fraud": True,
}  # fmt: skip

AVSC = {
    "type": "record", "name": "Payment", "namespace": "acme",
    "fields": [
        {"name": "id", "type": "string"}, {"name": "region", "type": "string"},
        {"name": "amount", "type": ["null", "double"]}, {"name": "score", "type": "double"},
        {"name": "outcome", "type": ["null", "int"], "default": None},
    ],
}  # fmt: skip


def source(**changes):
    return build_sources([{**JSON_SOURCE, **changes}])["payments"]


def test_a_nested_json_record_becomes_a_canonical_event():
    ev = source().to_event(json.dumps(RECORD).encode(), 2, 40, 123)
    assert ev == {
        "schema_version": EVENT.version, "event_id": "t-1", "event_time": 1_790_000_000_000, "model": "fraud",
        "slice": "fr/web", "features": {"amount": 12.5, "risk": 3.0}, "categorical": {"device": "ios"},
        "prediction": 0.83, "label": 1,
    }  # fmt: skip
    EVENT.decode(EVENT.encode(ev))  # it is a valid Event


def test_defaults_derive_the_id_and_take_the_kafka_timestamp_and_absent_values_are_missing():
    src = source(event_id=None, event_time=None, model="kind", slice="channel")
    rec = {**RECORD, "kind": "m2", "scores": {}}
    ev = src.to_event(json.dumps(rec).encode(), 1, 7, 1_790_000_000_123)
    assert ev["event_id"] == "payments/1/7" and ev["event_time"] == 1_790_000_000_123
    assert ev["model"] == "m2" and ev["slice"] == "web"
    assert ev["features"] == {"amount": 12.5, "risk": None} and ev["prediction"] is None


@pytest.mark.parametrize(
    "record, reason",
    [
        ({**RECORD, "geo": {}}, "slice field 'geo.country' missing or empty"),
        ({**RECORD, "txn": {"id": "x", "amount": "12"}}, "feature 'amount' (txn.amount) must be a number or null"),
        ({**RECORD, "ts": "yesterday"}, "ts: event_time: 'yesterday' is not ISO-8601"),
        ({**RECORD, "scores": {"p_fraud": "high"}}, "prediction (scores.p_fraud) must be a finite number"),
        ([1, 2], "expected a JSON object / Avro record, got list"),
    ],
)
def test_a_record_that_does_not_fit_goes_to_the_dlq_with_the_reason(record, reason):
    monitor = build_monitor(load_settings())
    sources = build_sources([{**JSON_SOURCE, "route": "direct"}])
    good = Message(None, json.dumps(RECORD).encode(), "payments", 0, 0, None)
    bad = Message(b"k", json.dumps(record).encode(), "payments", 0, 1, None)
    out = handle_batch(monitor, [good, bad], 0, sources)
    assert ("fraud", "fr/web") in monitor.slices
    assert len(out.dead_letters) == 1 and out.forwards == []
    bridged = handle_batch(build_monitor(load_settings()), [good, bad], 0, build_sources([JSON_SOURCE]))
    assert len(bridged.forwards) == 1 and bridged.forwards[0][0] == b"fr/web"
    assert [d[1] for d in bridged.dead_letters] == [d[1] for d in out.dead_letters]
    dl = DEAD_LETTER.decode(out.dead_letters[0][1])
    assert reason in dl["reason"] and dl["source_topic"] == "payments" and dl["source_offset"] == 1


def _avro(record, framing: str) -> bytes:
    parsed = parse_schema(AVSC)
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, record)
    body = buf.getvalue()
    if framing == "single_object":
        return b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")) + body
    if framing == "confluent":
        return b"\x00" + struct.pack(">I", 42) + body
    return body


@pytest.mark.parametrize("framing", ["single_object", "confluent", "raw"])
def test_avro_with_the_users_schema(tmp_path, framing):
    (tmp_path / "payment.avsc").write_text(json.dumps(AVSC))
    cfg = {"topic": "pay", "format": "avro", "schema": "payment.avsc", "framing": framing, "event_id": "id",
           "model": {"value": "m"}, "slice": "region", "features": ["amount"], "prediction": "score", "label": "outcome"}  # fmt: skip
    src = build_sources([cfg], base_dir=tmp_path)["pay"]
    ev = src.to_event(_avro({"id": "a", "region": "eu", "amount": None, "score": 0.2, "outcome": 0}, framing), 0, 0, 5)
    assert (ev["slice"], ev["features"], ev["prediction"], ev["label"], ev["event_time"]) == ("eu", {"amount": None}, 0.2, 0, 5)
    with pytest.raises(SchemaError, match="corrupt Avro body|trailing bytes"):
        src.to_event(_avro({"id": "a", "region": "eu", "amount": 1.0, "score": 0.2}, framing)[:-3], 0, 0, 5)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "avro"}, "format avro needs 'schema'"),
        ({"slice": []}, "sources[0].slice"),
        ({"lable": "x"}, "sources[0].lable: Extra inputs are not permitted"),
        ({"format": "xml"}, "sources[0].format: Input should be 'json' or 'avro'"),
        ({"format": "avro", "schema": "/nonexistent.avsc"}, "cannot use /nonexistent.avsc"),
    ],
)
def test_bad_source_configs_name_the_key(change, message):
    with pytest.raises(ConfigError) as info:
        build_sources([{**JSON_SOURCE, **change}])
    assert message in str(info.value)


def test_sources_come_from_the_model_config():
    cfg = parse_model_config({"sources": [JSON_SOURCE, {**JSON_SOURCE}]})
    with pytest.raises(ConfigError, match="mapped twice"):
        build_sources(cfg.sources)
