"""The columnar fast path (schemas/event_columns.py) takes a batch only when it reads every event
exactly as fastavro and the event limits would, and then gives the monitor the very columns the
per-event path builds: the same records, snapshot for snapshot."""

from __future__ import annotations

import io
import math
import pickle
import random
from unittest import mock

from fastavro import schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.scenarios import Drift, Scenario
from schemas.codec import EVENT, HEADER_LEN, MAGIC
from schemas.event_columns import decode_columns
from schemas.events import DEFAULT_LIMITS, decode_events
from schemas.settings import load_settings
from streams.collect import columns
from streams.config import build_monitor
from streams.processing import Message, handle_batch
from tests.unit.test_codec_fast_path import _mutate


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def _by_dicts(values: list[bytes]):
    """What the per-event path gives the monitor: per slice, its rows' columns."""
    events = decode_events(values)
    assert all(isinstance(e, dict) for e in events)
    slices: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(events):
        slices.setdefault((e["model"], e["slice"]), []).append(i)
    out = {}
    for key, rows in slices.items():
        evs = [events[r] for r in rows]
        out[key] = (
            rows,
            [e["event_time"] for e in evs],
            columns([e["features"] for e in evs]),
            columns([e["categorical"] for e in evs]),
            [e["label"] for e in evs],
            [e["prediction"] for e in evs],
        )
    return out


def _by_columns(values: list[bytes]):
    cols = decode_columns(values, DEFAULT_LIMITS)
    if cols is None:
        return None
    return {key: (rows, [cols.times[r] for r in rows], cols.numeric(rows), cols.categorical(rows), cols.labels(rows),
                  cols.predictions(rows)) for key, rows in cols.by_slice.items()}  # fmt: skip


def _assert_alike(values: list[bytes]) -> bool:
    """If the fast path takes ``values``, it gives what the per-event path gives; whether it took them."""
    fast = _by_columns(values)
    if fast is None:
        return False
    slow = _by_dicts(values)
    assert list(fast) == list(slow)
    for key in slow:
        assert _same(fast[key], slow[key]), key
    return True


numbers = st.one_of(
    st.none(), st.just(math.nan), st.floats(min_value=-1e150, max_value=1e150), st.just(1e200)
)
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)


@st.composite
def batches(draw, nice: bool = False):
    """Batches of one feature set; ``nice``: all within what the fast path takes."""
    names = draw(st.lists(ascii_text, max_size=4, unique=True))
    cats = draw(st.lists(ascii_text, max_size=3, unique=True))
    n = draw(st.integers(1, 30))
    events = []
    for _ in range(n):
        events.append(
            {
                "event_id": draw(ascii_text if nice else st.text(max_size=6)),
                "event_time": draw(st.integers(-(2**62), 2**62)),
                "model": draw(st.sampled_from(["m", "m2"])),
                "slice": draw(st.sampled_from(["a", "b", "d"] if nice else ["a", "b", "c/ü", "d"])),
                "features": {
                    k: draw(
                        numbers.filter(lambda v: not nice or v is None or abs(v) <= 1e150 or math.isnan(v))
                    )
                    for k in names
                },
                "categorical": {
                    k: draw(
                        st.one_of(
                            st.none(), st.sampled_from(["x", "y", ""] if nice else ["x", "y", "zé", ""])
                        )
                    )
                    for k in cats
                },
                "prediction": draw(st.one_of(st.none(), st.floats(0, 1))),
                "label": draw(st.one_of(st.none(), st.integers(-(2**40), 2**40), st.floats(-1e6, 1e6))),
                "model_version": draw(st.one_of(st.none(), st.just("v1"))),
            }
        )
    return [EVENT.encode(e) for e in events]


@settings(max_examples=300, deadline=None)
@given(batches())
def test_what_the_fast_path_takes_it_reads_as_the_event_path_does(values):
    _assert_alike(values)


@settings(max_examples=150, deadline=None)
@given(batches(nice=True))
def test_it_takes_every_batch_within_its_terms(values):
    assert _assert_alike(values)


def test_the_fast_path_takes_the_usual_batches():
    rng = random.Random(3)
    values = [EVENT.encode({
        "event_id": f"e{i}", "event_time": 1_790_000_000_000 + i, "model": "m", "slice": f"s{i % 4}",
        "features": {"amount": rng.gauss(0, 1), "n": None if i % 7 == 0 else float(i), "z": math.nan},
        "categorical": {"device": rng.choice(["ios", "web"]), "x": None}, "prediction": rng.random(),
        "label": [None, 1, 2.5][i % 3]}) for i in range(2000)]  # fmt: skip
    assert _assert_alike(values)


def _body_of(value: bytes) -> bytes:
    return value[HEADER_LEN:]


def test_mutated_batches_are_taken_only_when_fastavro_takes_every_event_alike():
    rng = random.Random(11)
    base = [EVENT.encode({
        "event_id": f"e{i}", "event_time": i, "model": "m", "slice": f"s{i % 3}",
        "features": {"amount": rng.gauss(0, 1), "k": None}, "categorical": {"device": "ios", "x": None},
        "prediction": 0.5 if i % 2 else None, "label": [None, 1, 2.5][i % 3], "model_version": "v" if i % 2 else None,
    }) for i in range(12)]  # fmt: skip
    taken = refused = 0
    for _ in range(4000):
        values = list(base)
        j = rng.randrange(len(values))
        values[j] = EVENT.header + _mutate(rng, _body_of(values[j]))
        if _by_columns(values) is None:
            refused += 1
            continue
        taken += 1
        body = io.BytesIO(_body_of(values[j]))
        schemaless_reader(body, EVENT.schema, None)  # fastavro reads the mutated event ...
        assert body.tell() == len(_body_of(values[j]))  # ... to its last byte
        assert _assert_alike(values)
    assert taken > 100 and refused > 1000


def _event(**over):
    event = {
        "event_id": "e",
        "event_time": 1,
        "model": "m",
        "slice": "s",
        "features": {"a": 1.0, "b": 2.0},
        "categorical": {"c": "x"},
        "prediction": 0.5,
        "label": 1,
    }
    event.update(over)
    return EVENT.encode(event)


def test_what_it_leaves_to_the_event_path():
    good = _event()
    assert decode_columns([good, good], DEFAULT_LIMITS) is not None
    label_varint = _body_of(_event(label=1))  # label branch 1, varint 02, model_version null 00
    assert label_varint.endswith(b"\x02\x02\x00")
    too_long = EVENT.header + label_varint[:-2] + b"\xff" * 9 + b"\x02" + b"\x00"  # 10 bytes beyond 64 bits
    cases = {
        "non-ASCII slice": _event(slice="sü"),
        "other feature order": _event(features={"b": 2.0, "a": 1.0}),
        "another feature set": _event(features={"a": 1.0}),
        "a value beyond the limit": _event(features={"a": 1e300, "b": 2.0}),
        "an infinite value": _event(features={"a": math.inf, "b": 2.0}),
        "a NaN prediction": _event(prediction=math.nan),
        "an empty slice": _event(slice=""),
        "a byte left over": good + b"\x00",
        "a varint beyond 64 bits": too_long,
        "JSON": b'{"event_id": "e", "event_time": 1, "model": "m", "slice": "s"}',
        "an old schema version": MAGIC + b"\x00" * 8 + _body_of(good),
        "nothing": None,
    }
    for why, bad in cases.items():
        assert decode_columns([good, bad], DEFAULT_LIMITS) is None, why


def test_a_stream_through_the_columns_makes_the_records_and_state_of_the_event_path():
    scenario = Scenario(
        slices=("a", "b", "c"), events_per_slice=2500, seed=8,
        drifts=(Drift("a", "amount", 900, "mean", 1.0), Drift("b", "device", 1000, "category_mix", 3.0),
                Drift("c", None, 800, "error_rate", 3.0), Drift("b", "latency_ms", 1200, "missing", 2.0)),
    )  # fmt: skip
    msgs = [
        Message(e["slice"].encode(), EVENT.encode(e), "t", i % 2, i // 2, 0)
        for i, e in enumerate(scenario.events())
    ]

    def run(columnar: bool):
        monitor = build_monitor(load_settings())
        outs = []
        with mock.patch("streams.processing.decode_columns", wraps=decode_columns) as fast:
            if not columnar:
                fast.side_effect = lambda values, limits: None
            for start in range(0, len(msgs), 700):
                outs.append(handle_batch(monitor, msgs[start : start + 700], 5))
            assert fast.call_count == len(outs)
        states = {k: pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL) for k, st in monitor.slices.items()}
        return [(o.alerts, o.stats, o.dead_letters, o.touched) for o in outs], states

    columnar, by_events = run(True), run(False)
    assert sum(len(o[0]) for o in columnar[0]) >= 3  # the drifts were alerted
    assert columnar[0] == by_events[0]
    assert columnar[1].keys() == by_events[1].keys()
    for key in columnar[1]:
        a, b = pickle.loads(columnar[1][key]), pickle.loads(by_events[1][key])
        assert (a.last_offset, a.events, sorted(a.numeric), sorted(a.categorical)) == (
            b.last_offset,
            b.events,
            sorted(b.numeric),
            sorted(b.categorical),
        )


def test_int_labels_are_held_to_a_lower_limit_exactly():
    """An int label just above a custom limit: refused as the event path refuses it (no float rounding)."""
    from schemas.events import EventLimits

    def int_label(value: int) -> bytes:  # the label's int branch with a varint beyond 32 bits
        zigzag, varint = (value << 1) ^ (value >> 63), bytearray()
        while zigzag > 0x7F:
            varint.append((zigzag & 0x7F) | 0x80)
            zigzag >>= 7
        varint.append(zigzag)
        return _event(label=1)[:-3] + b"\x02" + bytes(varint) + b"\x00"

    limits = EventLimits(max_abs_value=float(2**53))
    for label, taken in ((2**53, True), (2**53 + 1, False), (-(2**53) - 1, False), (-(2**53), True)):
        values = [_event(), int_label(label)]
        assert decode_events(values)[1]["label"] == label
        assert (decode_columns(values, limits) is not None) is taken, label
        assert isinstance(decode_events(values, limits)[1], dict) is taken, label
