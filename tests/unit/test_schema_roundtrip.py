"""Every record type survives encode -> decode, for arbitrary valid records (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import CODECS, EVENT, MAGIC, RecordCodec, _load_json
from schemas.errors import SchemaError

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


def strategy_for(schema, named=None):
    """A hypothesis strategy producing valid Python values for a (parsed) Avro schema."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of(*[strategy_for(s, named) for s in schema])
    if isinstance(schema, str):
        simple = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": INT32,
            "long": INT64,
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
            "string": st.text(max_size=20),
            "bytes": st.binary(max_size=20),
        }
        if schema in simple:
            return simple[schema]
        return st.deferred(lambda: named[schema])
    kind = schema["type"]
    if kind == "record":
        fields = {f["name"]: strategy_for(f["type"], named) for f in schema["fields"]}
        strat = st.fixed_dictionaries(fields)
        named[schema["name"]] = strat
        return strat
    if kind == "enum":
        strat = st.sampled_from(schema["symbols"])
        named[schema["name"]] = strat
        return strat
    if kind == "array":
        return st.lists(strategy_for(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), strategy_for(schema["values"], named), max_size=4)
    return strategy_for(kind, named)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_round_trip(name):
    codec = CODECS[name]

    @settings(max_examples=150, deadline=None)
    @given(strategy_for(codec.schema))
    def check(record):
        data = codec.encode(record)
        assert data[:2] == MAGIC and data[2:10] == codec.fingerprint
        assert codec.decode(data) == record

    check()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_every_schema_carries_a_version(name):
    fields = {f["name"]: f for f in CODECS[name].schema_json["fields"]}
    assert fields["schema_version"]["type"] == "int"
    assert isinstance(CODECS[name].version, int)


def test_fingerprint_is_spec_crc64_of_canonical_form():
    """Cross-check against an independent implementation of the spec's Rabin fingerprint."""
    from fastavro.schema import to_parsing_canonical_form

    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in to_parsing_canonical_form(EVENT.schema).encode():
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    assert EVENT.fingerprint == fp.to_bytes(8, "little")


def test_old_version_bytes_decode_with_new_schema():
    """Evolution: Event v1 (no categorical) decodes as v2 with the new field's default."""
    v1 = _load_json("history/event.v1.avsc")
    old = {
        "schema_version": 1,
        "event_id": "e1",
        "event_time": 1_790_000_000_000,
        "model": "m",
        "slice": "eu",
        "features": {"x": 1.5, "gone": None},
        "prediction": 0.3,
        "label": 1,
    }
    decoded = EVENT.decode(EVENT.encode_with(old, v1))
    assert decoded == {**old, "categorical": {}, "model_version": None}


def test_model_update_v1_decodes_with_no_live_losses():
    from schemas.codec import MODEL_UPDATE

    old = {"schema_version": 1, "update_id": "m:v2:SHADOW", "model": "m", "version": "v2", "previous_version": "v1",
           "current_version": "v1", "stage": "SHADOW", "canary_fraction": 0.0, "slices": ["eu"], "decision": None,
           "reason": "", "request_id": None, "statistic": None, "events": 0, "updated_at": 1_790_000_000_000}  # fmt: skip
    decoded = MODEL_UPDATE.decode(MODEL_UPDATE.encode_with(old, _load_json("history/model_update.v1.avsc")))
    assert decoded == {**old, "candidate_loss": None, "incumbent_loss": None}


def test_unknown_fingerprint_and_garbage_are_clear_errors():
    codec = RecordCodec("Event", _load_json("event.avsc"))
    with pytest.raises(SchemaError, match="unknown schema fingerprint"):
        codec.decode(MAGIC + b"\x00" * 8 + b"\x02")
    with pytest.raises(SchemaError, match="not Avro single-object"):
        codec.decode(b"hello world")
    good = EVENT.encode(
        {"event_id": "a", "event_time": 1, "model": "m", "slice": "s", "features": {}, "categorical": {}}
    )
    with pytest.raises(SchemaError, match="corrupt|trailing") as info:
        codec.decode(good[:-1] + b"\xff\xff\xff")
    assert info.value.__cause__ is not None or "trailing" in str(info.value)


def test_encode_error_is_wrapped_with_cause():
    with pytest.raises(SchemaError, match="does not match its schema") as info:
        EVENT.encode({"event_id": 5})
    assert info.value.__cause__ is not None


def test_avsc_files_are_valid_json_and_named():
    for name, codec in CODECS.items():
        assert codec.schema_json["name"] == name
        json.dumps(codec.schema_json)


def test_retrain_request_v1_decodes_with_no_alert_types():
    """Evolution: a RetrainRequest from a router before triage reads as v2 with alert_types [] (not triaged)."""
    from schemas.codec import RETRAIN_REQUEST

    v1 = _load_json("history/retrain_request.v1.avsc")
    old = {
        "schema_version": 1, "request_id": "r1", "alert_ids": ["a1"], "model": "m", "slices": ["eu"],
        "modules": ["adapter.eu"], "tier": "ADAPTER",
        "snapshot": {"topic": "drift.events", "ranges": [{"partition": 0, "start_offset": 5, "end_offset": 9}],
                     "slice_filter": ["eu"], "labelled_only": True},
        "priority": 2001, "policy_version": "router-1", "created_at": 1_790_000_000_000,
    }
    assert RETRAIN_REQUEST.decode(RETRAIN_REQUEST.encode_with(old, v1)) == {**old, "alert_types": []}
