"""One message in, records out; a bad message becomes a dead letter, never an exception."""

from __future__ import annotations

from schemas.codec import DEAD_LETTER, EVENT
from schemas.settings import load_settings
from streams.config import prototypes
from streams.monitor import Monitor, MonitorConfig
from streams.processing import Message, handle


def monitor() -> Monitor:
    return Monitor(prototypes(load_settings()), MonitorConfig(worker_id="w1"))


def test_malformed_message_goes_to_dead_letter_with_reason_and_origin():
    msg = Message(b"eu", b"{broken", "drift.events", 2, 41, 1234)
    out = handle(monitor(), msg, now_ms=99)
    assert out.alerts == [] and out.stats == [] and len(out.dead_letters) == 1
    key, value = out.dead_letters[0]
    dl = DEAD_LETTER.decode(value)
    assert key == b"eu"
    assert dl["original_value"] == b"{broken" and "invalid JSON" in dl["reason"]
    assert (dl["source_topic"], dl["source_partition"], dl["source_offset"]) == ("drift.events", 2, 41)
    assert dl["error_type"] == "SchemaError" and dl["worker_id"] == "w1"


def test_unexpected_failure_is_contained():
    class Exploding(Monitor):
        def _slice_batch(self, *a, **k):
            raise RuntimeError("boom")

    ok = EVENT.encode({"event_id": "a", "event_time": 1, "model": "m", "slice": "s", "features": {"x": 1.0}, "categorical": {}})
    out = handle(Exploding({}, MonitorConfig()), Message(None, ok, "t", 0, 1, None), 0)
    dl = DEAD_LETTER.decode(out.dead_letters[0][1])
    assert "RuntimeError: boom" in dl["reason"] and dl["original_key"] is None


def test_good_message_updates_state():
    m = monitor()
    ok = EVENT.encode({"event_id": "a", "event_time": 1, "model": "m", "slice": "s", "features": {"x": 1.0}, "categorical": {}})
    out = handle(m, Message(b"s", ok, "t", 0, 7, None), 0)
    assert out.dead_letters == [] and out.state is m.slices[("m", "s")]
    assert out.state.last_offset == {("t", 0): 7}
