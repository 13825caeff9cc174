"""Malformed events-topic messages, seeded, for the fuzz test and the chaos benchmark.

Every message :func:`malformed_messages` yields must be dead-lettered by the streams worker
(``schemas.events.decode_event`` raises ``SchemaError`` on it with the default limits); the
unit suite checks that for every kind. Kinds cover what a careless or hostile producer
sends: random bytes, empty values, cut or corrupted Avro, an unknown schema fingerprint,
JSON of the wrong types or shape, NaN / inf / 1e308 where a number must be finite, deep
nesting (up to 50,000 levels), ids over the length limit, a near-1 MB message, invalid
UTF-8. Pure: no Kafka, no I/O; the caller produces the bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

from schemas.codec import EVENT, MAGIC

NEAR_1MB = 1_000_000  # under librdkafka's and the broker's default 1 MB message limit

Generator = Callable[[random.Random, int], bytes]


def good_event(i: int, model: str = "fuzz-model", slice_: str = "fuzz-slice") -> dict:
    """A valid event in the JSON shape (the base that the malformed kinds break)."""
    return {
        "event_id": f"fuzz-{i}",
        "event_time": 1_700_000_000_000 + i,
        "model": model,
        "slice": slice_,
        "features": {"x": float(i % 7), "y": 1.5},
        "categorical": {"c": "a"},
        "prediction": 0.5,
        "label": i % 2,
    }


def _avro(i: int) -> bytes:
    e = good_event(i)
    return EVENT.encode({**e, "schema_version": EVENT.version, "model_version": None})


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _random_bytes(r: random.Random, i: int) -> bytes:
    data = r.randbytes(r.randint(1, 512))
    return b"\x00" + data if data[:1] == b"{" or data[:2] == MAGIC else data  # neither JSON nor Avro framing


def _empty(r: random.Random, i: int) -> bytes:
    return r.choice([b"", b" ", b"\n", b"{}", b"{ }"])


def _truncated_avro(r: random.Random, i: int) -> bytes:
    data = _avro(i)
    return data[: r.randint(0, len(data) - 1)]


def _avro_trailing(r: random.Random, i: int) -> bytes:
    return _avro(i) + r.randbytes(r.randint(1, 32))


def _unknown_fingerprint(r: random.Random, i: int) -> bytes:
    data = _avro(i)
    fp = r.randbytes(8)
    while fp == data[2:10]:
        fp = r.randbytes(8)
    return MAGIC + fp + data[10:]


def _avro_garbage(r: random.Random, i: int) -> bytes:
    """The current header, then a body of random bytes or huge / negative lengths."""
    body = r.choice([r.randbytes(r.randint(0, 64)), b"\x02e" + b"\xff" * 9 + b"\x01", b"\x01" * 40])
    return EVENT.header + body


_WRONG_TYPES = [
    ("event_time", True), ("event_time", "yesterday"), ("event_time", [1]), ("event_time", "2024-01-01T00:00:00"),
    ("model", {"a": 1}), ("slice", [1, 2]), ("slice", True), ("event_id", 1.5), ("features", [1, 2]),
    ("features", {"x": "one"}), ("features", {"x": [1]}), ("categorical", ["a"]), ("categorical", {"c": {"d": 1}}),
    ("prediction", "high"), ("label", "yes"), ("label", {"v": 1}), ("model_version", 3.5), ("unknown_field", 1),
    ("slice", ""), ("model", None),
]  # fmt: skip


def _wrong_types(r: random.Random, i: int) -> bytes:
    field, value = r.choice(_WRONG_TYPES)
    return _json({**good_event(i), field: value})


def _not_an_object(r: random.Random, i: int) -> bytes:
    return r.choice([b"[1, 2, 3]", b"null", b'"an event"', b"42", b"{", b"{\"event_id\": ", b"{'single': 'quotes'}"])


_NON_FINITE = [
    ("event_time", "NaN"), ("event_time", "1e308"), ("event_time", "Infinity"), ("label", "NaN"),
    ("prediction", "-Infinity"), ("prediction", "NaN"), ("feature", "1e308"), ("feature", "Infinity"),
    ("feature", "-1e200"), ("label", "1e308"),
]  # fmt: skip


def _non_finite(r: random.Random, i: int) -> bytes:
    field, literal = r.choice(_NON_FINITE)
    e = good_event(i)
    if field == "feature":
        e["features"] = {"x": "@@"}
    else:
        e[field] = "@@"
    return _json(e).replace(b'"@@"', literal.encode())  # json.dumps cannot write these literals itself


def _deep_nesting(r: random.Random, i: int) -> bytes:
    depth = r.choice([1_000, 5_000, 50_000])
    opener, closer = r.choice([(b'{"a":', b"}"), (b"[", b"]")])
    inner = opener * depth + b"1" + closer * depth
    return r.choice([inner, b'{"features":' + inner + b"}"]) if opener == b"[" else inner


def _long_id(r: random.Random, i: int) -> bytes:
    field = r.choice(["slice", "model", "event_id", "model_version"])
    return _json({**good_event(i), field: "s" * r.choice([257, 10_000, 100_000])})


def _too_many_features(r: random.Random, i: int) -> bytes:
    return _json({**good_event(i), "features": {f"f{k}": 1.0 for k in range(1001 + r.randint(0, 200))}})


def _near_1mb(r: random.Random, i: int) -> bytes:
    pad = NEAR_1MB - 200
    return r.choice([
        _json({**good_event(i), "slice": "x" * pad}),
        _json({**good_event(i), "categorical": {"c": "v" * pad}}),
        b"{" + b" " * pad + b"}",
        MAGIC + r.randbytes(8) + r.randbytes(pad),
    ])  # fmt: skip


def _invalid_utf8(r: random.Random, i: int) -> bytes:
    bad = r.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\\ud800"])
    field = r.choice(["slice", "model", "event_id"])
    return _json({**good_event(i), field: "@@"}).replace(b"@@", b"s" + bad)  # a lone surrogate (ed a0 80) too


# kind -> (generator, weight per mille): a 10,000-message run is about 30 MB (deep and big ones are rare)
KINDS: dict[str, tuple[Generator, int]] = {
    "random_bytes": (_random_bytes, 120),
    "empty": (_empty, 60),
    "truncated_avro": (_truncated_avro, 120),
    "avro_trailing_bytes": (_avro_trailing, 50),
    "unknown_fingerprint": (_unknown_fingerprint, 80),
    "avro_garbage_body": (_avro_garbage, 80),
    "wrong_json_types": (_wrong_types, 140),
    "json_not_an_object": (_not_an_object, 60),
    "nan_inf_1e308": (_non_finite, 100),
    "deep_nesting": (_deep_nesting, 15),
    "long_id": (_long_id, 60),
    "too_many_features": (_too_many_features, 5),
    "near_1mb": (_near_1mb, 1),
    "invalid_utf8": (_invalid_utf8, 80),
}


def malformed_messages(n: int, seed: int = 0, kinds: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """``n`` seeded ``(kind, value)`` pairs; every kind appears once before any repeats."""
    r = random.Random(seed)
    names = list(kinds or KINDS)
    weights = [KINDS[k][1] for k in names]
    for i in range(n):
        kind = names[i] if i < len(names) else r.choices(names, weights)[0]
        yield kind, KINDS[kind][0](r, i)
