"""One input message in, records to send out: the pure core of the detection agent.

A message that cannot be decoded, or that breaks processing in any way, becomes a
DeadLetter with the reason and its origin; it never escapes as an exception, so one bad
message cannot stop a worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from schemas.codec import ALERT, DEAD_LETTER, STAT, decode_event
from schemas.errors import SchemaError
from streams.monitor import Monitor, SliceState

log = logging.getLogger(__name__)


@dataclass
class Outgoing:
    """Encoded (key, value) pairs per destination topic."""

    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    stats: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    state: SliceState | None = None  # the slice the message updated, for snapshotting


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def dead_letter(msg: Message, reason: str, error_type: str, worker_id: str, now_ms: int) -> bytes:
    return DEAD_LETTER.encode(
        {
            "schema_version": DEAD_LETTER.version,
            "original_key": msg.key,
            "original_value": msg.value,
            "reason": reason[:4000],
            "error_type": error_type,
            "source_topic": msg.topic,
            "source_partition": msg.partition,
            "source_offset": msg.offset,
            "source_timestamp": msg.timestamp_ms,
            "worker_id": worker_id,
            "failed_at": now_ms,
        }
    )


def handle(monitor: Monitor, msg: Message, now_ms: int) -> Outgoing:
    out = Outgoing()
    worker_id = monitor.config.worker_id
    try:
        event = decode_event(msg.value)
        result = monitor.observe(event, msg.topic, msg.partition, msg.offset, now_ms)
        out.state = result.state
        key = event["slice"].encode()
        out.alerts = [(key, ALERT.encode(a)) for a in result.alerts]
        out.stats = [(key, STAT.encode(s)) for s in result.stats]
    except SchemaError as exc:
        out.dead_letters.append((msg.key, dead_letter(msg, str(exc), "SchemaError", worker_id, now_ms)))
    except Exception as exc:  # noqa: BLE001 - a bug on one message must not kill the worker
        log.exception("processing failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
        reason = f"processing error: {type(exc).__name__}: {exc}"
        out.dead_letters.append((msg.key, dead_letter(msg, reason, type(exc).__name__, worker_id, now_ms)))
    return out
