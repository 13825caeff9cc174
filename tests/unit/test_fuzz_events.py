"""Hostile input: whatever bytes arrive, the one event decoder returns an event or a SchemaError
with a reason, and the streams core turns every bad one into a dead letter without a traceback."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.fuzz import KINDS, good_event, malformed_messages
from schemas.codec import DEAD_LETTER, EVENT
from schemas.errors import SchemaError
from schemas.events import EventLimits, decode_event, decode_events
from schemas.settings import load_settings
from streams.config import prototypes
from streams.monitor import Monitor, MonitorConfig
from streams.processing import MAX_DEAD_LETTER_VALUE, Message, handle_batch


def _only_schema_error(data: bytes) -> dict | None:
    try:
        event = decode_event(data)
    except SchemaError as exc:
        assert str(exc), "a dead letter needs a reason"
        return None
    EVENT.validate(event)  # what comes out is a valid event, always
    return event


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_schema_error(data):
    _only_schema_error(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_bytes_after_a_valid_header_decode_or_schema_error(body):
    _only_schema_error(EVENT.header + body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(good_event(0))), json_values)
def test_any_json_value_in_any_field_decodes_or_schema_error(field, value):
    data = json.dumps({**good_event(1), field: value}).encode()
    event = _only_schema_error(data)
    if event is not None:  # accepted values come out finite and within the limits
        assert all(v is None or math.isnan(v) or abs(v) <= 1e150 for v in event["features"].values())
        assert all(len(event[k]) <= 256 for k in ("event_id", "model", "slice"))


def test_every_fuzz_kind_is_refused_with_a_reason():
    counts = Counter()
    for kind, data in malformed_messages(3000, seed=11):
        counts[kind] += 1
        with pytest.raises(SchemaError, match=".+"):
            decode_event(data)
    assert set(counts) == set(KINDS) and sum(counts.values()) == 3000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        (json.dumps({**good_event(1), "slice": "s" * 100_000}).encode(), "slice is 100,000 characters"),
        (json.dumps({**good_event(1), "model": "m" * 300}).encode(), "DRIFT_EVENT_MAX_ID_LENGTH"),
        (json.dumps(good_event(1)).encode().replace(b'"label": 1', b'"label": NaN'), "label: nan"),
        (json.dumps(good_event(1)).encode().replace(b'"y": 1.5', b'"y": 1e308'), "features.y: 1e+308"),
        (json.dumps({**good_event(1), "slice": "\ud800"}).encode(), "not valid Unicode"),
        (json.dumps(good_event(1)).encode().replace(b"fuzz-slice", b"fuzz-\xff"), "invalid JSON"),
    ],
)
def test_hostile_events_get_a_clear_reason(data, reason):
    with pytest.raises(SchemaError, match=reason.replace("+", r"\+")):
        decode_event(data)


def test_id_limit_is_a_setting():
    data = json.dumps({**good_event(1), "slice": "s" * 300}).encode()
    with pytest.raises(SchemaError):
        decode_event(data)
    limits = EventLimits.from_settings(load_settings(event_max_id_length=512))
    assert decode_event(data, limits)["slice"] == "s" * 300
    avro = EVENT.encode({**good_event(2), "schema_version": EVENT.version, "model_version": None, "slice": "s" * 300})
    with pytest.raises(SchemaError, match="slice is 300 characters"):  # the Avro path has the same limit
        decode_event(avro)


def test_streams_core_dead_letters_every_fuzz_message_and_processes_every_good_one(caplog):
    monitor = Monitor(prototypes(load_settings()), MonitorConfig(worker_id="w"))
    msgs, bad = [], {}
    for i, (kind, data) in enumerate(malformed_messages(1500, seed=5)):
        msgs.append(Message(f"bad-{i}".encode(), data, "drift.events", 0, 2 * i, None))
        bad[2 * i] = kind
        good = EVENT.encode({**good_event(i), "schema_version": EVENT.version, "model_version": None})
        msgs.append(Message(b"fuzz-slice", good, "drift.events", 0, 2 * i + 1, None))
    with caplog.at_level(logging.WARNING):
        out = handle_batch(monitor, msgs, now_ms=1)
    letters = [DEAD_LETTER.decode(v) for _k, v in out.dead_letters]
    assert sorted(dl["source_offset"] for dl in letters) == sorted(bad)
    assert all(dl["reason"] and dl["error_type"] == "SchemaError" for dl in letters)
    assert all(len(dl["original_value"] or b"") <= MAX_DEAD_LETTER_VALUE for dl in letters)
    assert monitor.slices[("fuzz-model", "fuzz-slice")].last_offset == {("drift.events", 0): 2 * 1499 + 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a bad message logged an error"


def _verdict(data: bytes) -> dict | str:
    try:
        return decode_event(data)
    except SchemaError as exc:
        return str(exc)


def test_batch_decoder_gives_each_message_the_single_decoders_verdict():
    """decode_events (the streams worker's) and decode_event (every other reader's) agree on
    every message: fuzz kinds, and Avro events whose numbers break the limit only in a batch."""
    good = {**good_event(0), "schema_version": EVENT.version, "model_version": None}
    numbers = [
        {"prediction": math.nan}, {"prediction": 1e200}, {"label": -1e151}, {"label": math.inf},
        {"features": {"a": math.nan, "b": None}}, {"features": {"a": 2e150}}, {"features": {"a": -math.inf}},
        {"prediction": None, "label": None, "features": {}}, {"label": 3}, {"prediction": -1e150},
    ]
    values = [EVENT.encode({**good, **change}) for change in numbers]
    values += [data for _kind, data in malformed_messages(600, seed=11)]
    values += [EVENT.encode({**good, "event_id": f"e{i}"}) for i in range(50)]
    expected = [_comparable(_verdict(v)) for v in values]
    for start, end in ((0, len(values)), (0, 10), (10, len(values)), (len(values) - 50, len(values))):
        got = [_comparable(str(r) if isinstance(r, SchemaError) else r) for r in decode_events(values[start:end])]
        assert got == expected[start:end]
    assert [j for j in range(10) if expected[j].startswith("'")] == [0, 1, 2, 3, 5, 6]  # the bad numbers
    assert sum(r.startswith("'") for r in expected) > 400  # and the fuzz kinds were refused


def _comparable(verdict: dict | str) -> str:
    """NaN != NaN, but their reprs are equal; fastavro's messages hold object addresses."""
    return re.sub(r"0x[0-9a-f]+", "0x", repr(verdict))


def test_batch_decoder_takes_events_without_numeric_features():
    """Label-only or categorical-only models: a batch whose events carry no numeric feature."""
    events = [{"event_id": f"e{i}", "event_time": 1, "model": "m", "slice": "s", "label": 1,
               "categorical": {"c": "x"}} for i in range(3)]
    got = decode_events([EVENT.encode(ev) for ev in events])
    assert [g["event_id"] for g in got] == ["e0", "e1", "e2"]
    assert all(g["features"] == {} for g in got)


def test_refused_messages_hold_no_reference_cycle():
    """A refusal is kept without its traceback, whose frames would hold the whole batch."""
    import gc

    values = [EVENT.encode({**good_event(i), "schema_version": EVENT.version, "model_version": None})
              for i in range(200)] + [b"\xc3\x01garbage", b"", b"{"]
    gc.collect()
    gc.disable()
    try:
        out = decode_events(values)
        assert sum(isinstance(r, SchemaError) for r in out) == 3
        del out
        assert gc.collect() == 0
    finally:
        gc.enable()
