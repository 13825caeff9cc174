"""The cavro fast path of the record codec accepts only what fastavro accepts, and decodes it to
the same value: it may refuse more (fastavro then gives the verdict), never less."""

from __future__ import annotations

import io
import math
import random

import pytest
from fastavro import schemaless_reader
from hypothesis import given, settings

from schemas.codec import CODECS, EVENT, HEADER_LEN, _unbordered_guard
from tests.unit.test_schema_roundtrip import strategy_for


def _fastavro(codec, body: bytes):
    """fastavro's verdict: the record, or None if it refuses the body or leaves bytes over."""
    buf = io.BytesIO(body)
    try:
        record = schemaless_reader(buf, codec.schema, None)
    except Exception:  # noqa: BLE001 - any refusal counts
        return None
    return record if buf.tell() == len(body) else None


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", sorted(CODECS))
def test_valid_records_decode_alike(name):
    codec = CODECS[name]

    @settings(max_examples=100, deadline=None)
    @given(strategy_for(codec.schema))
    def check(record):
        body = codec.encode(record)[HEADER_LEN:]
        fast = codec._fast.read(body)
        assert fast is not None
        assert _same(fast, _fastavro(codec, body))

    check()


def _mutate(rng: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    kind = rng.randrange(5)
    i = rng.randrange(len(b) + 1)
    if kind == 0 and b:  # flip a byte
        b[min(i, len(b) - 1)] = rng.randrange(256)
    elif kind == 1:  # insert one
        b.insert(i, rng.randrange(256))
    elif kind == 2 and b:  # delete one
        del b[min(i, len(b) - 1)]
    elif kind == 3:  # cut the end
        del b[i:]
    else:  # bytes left over
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
    return bytes(b)


def test_mutated_events_are_never_accepted_where_fastavro_refuses():
    rng = random.Random(7)
    bodies = [
        EVENT.encode({
            "event_id": f"e{i}", "event_time": 1_790_000_000_000 + i, "model": "m", "slice": f"s{i % 3}",
            "features": {"amount": rng.gauss(0, 1), "n": None}, "categorical": {"device": "ios", "x": None},
            "prediction": 0.3 if i % 2 else None, "label": [None, 1, 2.5][i % 3], "model_version": "v1" if i % 2 else None,
        })[HEADER_LEN:]
        for i in range(40)
    ]
    refused_both = accepted = 0
    for _ in range(20_000):
        body = _mutate(rng, rng.choice(bodies))
        fast, judged = EVENT._fast.read(body), _fastavro(EVENT, body)
        if fast is None:
            refused_both += judged is None
            continue
        accepted += 1
        assert judged is not None, body.hex()
        assert _same(fast, judged), body.hex()
    assert accepted > 1000 and refused_both > 1000  # both sides of the check were exercised


def test_left_over_and_missing_bytes_are_refused():
    body = EVENT.encode({"event_id": "e", "event_time": 1, "model": "m", "slice": "s"})[HEADER_LEN:]
    assert EVENT._fast.read(body) is not None
    for bad in (body + b"\x00", body + EVENT._fast.guard[:7], body[:-1], b""):
        assert EVENT._fast.read(bad) is None


def test_guards_do_not_overlap_themselves():
    for _ in range(200):
        guard = _unbordered_guard()
        assert len(guard) == 8
        assert all(guard[:k] != guard[-k:] for k in range(1, 8))


def test_ints_beyond_32_bits_decode_as_fastavro_reads_them():
    """An int's varint may carry more than 32 bits (foreign writers); fastavro reads all of it."""
    body = EVENT.encode({"event_id": "e", "event_time": 1, "model": "m", "slice": "s", "label": 1})[HEADER_LEN:]
    for value in (2**31, -(2**31) - 1, 2**40):
        zigzag = (value << 1) ^ (value >> 63)
        varint = bytearray()
        while zigzag > 0x7F:
            varint.append((zigzag & 0x7F) | 0x80)
            zigzag >>= 7
        varint.append(zigzag)
        # the label's union branch 1 (int), its varint, then model_version null
        forged = body[:-3] + b"\x02" + bytes(varint) + b"\x00"
        judged = _fastavro(EVENT, forged)
        assert judged is not None and judged["label"] == value
        assert _same(EVENT._fast.read(forged), judged)
