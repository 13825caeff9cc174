"""JSON events on the input topic are validated against the same Event schema."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import EVENT
from schemas.errors import SchemaError
from schemas.events import decode_event, parse_json_event

SAMPLE = {
    "event_id": "e-1",
    "event_time": 1790000000000,
    "model": "m",
    "slice": "eu-west",
    "features": {"amount": 12.5},
    "categorical": {"device": "ios"},
    "prediction": 0.83,
    "label": 1,
}


def test_sample_event_from_the_docs_parses_and_matches_avro():
    ev = parse_json_event(json.dumps(SAMPLE))
    assert ev["features"] == {"amount": 12.5} and ev["label"] == 1
    assert decode_event(EVENT.encode(ev)) == ev
    assert decode_event(json.dumps(SAMPLE).encode()) == ev


def test_optional_fields_default_and_ints_become_doubles():
    ev = parse_json_event(json.dumps({"event_id": "a", "event_time": 5, "model": "m", "slice": "s", "features": {"x": 3}}))
    assert ev["features"] == {"x": 3.0} and isinstance(ev["features"]["x"], float)
    assert ev["categorical"] == {} and ev["prediction"] is None and ev["label"] is None


def test_json_scalars_are_taken_as_users_write_them():
    """true/false labels and flags, numeric category codes and integer slice ids are common in
    JSON; they map onto the schema without loss instead of dead-lettering every event."""
    ev = parse_json_event(json.dumps({**SAMPLE, "slice": 7, "label": True, "prediction": False,
                                      "features": {"is_new": True, "x": 2},
                                      "categorical": {"device": 3, "vip": False, "tier": 1.5, "os": None}}))
    assert ev["slice"] == "7" and ev["label"] == 1 and ev["prediction"] == 0.0
    assert ev["features"] == {"is_new": 1.0, "x": 2.0}
    assert ev["categorical"] == {"device": "3", "vip": "false", "tier": "1.5", "os": None}
    assert parse_json_event(json.dumps({**SAMPLE, "label": False}))["label"] == 0


def test_iso_time_accepted():
    ev = parse_json_event(json.dumps({**SAMPLE, "event_time": "2026-09-21T00:00:00Z"}))
    assert ev["event_time"] == 1789948800000


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"features": {"amount": "12"}}, "features.amount"),
        ({"features": [1, 2]}, "features"),
        ({"slice": ""}, "slice"),
        ({"model": None}, "model"),
        ({"label": "yes"}, "label"),
        ({"prediction": "0.5"}, "prediction"),
        ({"slice": 1.5}, "slice"),
        ({"event_time": "yesterday"}, "event_time"),
        ({"surprise": 1}, "unknown field"),
        ({"categorical": {"device": [3]}}, "categorical.device"),
        ({"categorical": ["ios"]}, "categorical"),
    ],
)
def test_bad_events_say_what_is_wrong(patch, message):
    with pytest.raises(SchemaError, match=message):
        parse_json_event(json.dumps({**SAMPLE, **patch}))


def test_not_json_not_avro():
    for raw in (b"", b"\x00\x01", b"[1,2]", b"{not json"):
        with pytest.raises(SchemaError):
            decode_event(raw)


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    event_id=names,
    event_time=st.integers(0, 2**42),
    slice_=names,
    features=st.dictionaries(names, st.one_of(st.none(), st.floats(-1e150, 1e150)), max_size=5),
    categorical=st.dictionaries(names, st.one_of(st.none(), names), max_size=3),
    prediction=st.one_of(st.none(), st.floats(0, 1)),
    label=st.one_of(st.none(), st.integers(0, 1), st.floats(-1e150, 1e150)),
)
def test_json_round_trip(event_id, event_time, slice_, features, categorical, prediction, label):
    raw = {
        "event_id": event_id, "event_time": event_time, "model": "m", "slice": slice_,
        "features": features, "categorical": categorical, "prediction": prediction, "label": label,
    }
    ev = parse_json_event(json.dumps(raw))
    assert decode_event(EVENT.encode(ev)) == ev
