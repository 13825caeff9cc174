"""Messages in, records to send out: the pure core of the detection worker.

A message that cannot be decoded, or that breaks processing in any way, becomes a
DeadLetter with the reason and its origin; it never escapes as an exception, so one bad
message cannot stop a worker.

Also pure: when to checkpoint (snapshot the changed slices, then commit) and which idle
slices to drop from memory. The worker passes the clock in, so both are unit-testable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.codec import ALERT, DEAD_LETTER, EVENT, STAT
from schemas.errors import SchemaError
from schemas.event_columns import EventColumns, decode_columns
from schemas.events import DEFAULT_LIMITS, EventLimits, check_limits, decode_event, decode_events
from streams.monitor import Item, Monitor
from streams.sources import Source
from streams.state import SliceState

log = logging.getLogger(__name__)

SliceKey = tuple[str, str]  # (model, slice)


@dataclass
class Outgoing:
    """Encoded (key, value) pairs per destination topic, for one message or a whole batch."""

    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    stats: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    forwards: list[tuple[bytes, bytes]] = field(default_factory=list)  # bridged users' events -> events topic
    state: SliceState | None = None  # the slice the last message updated
    touched: dict[SliceKey, int] = field(
        default_factory=dict
    )  # slices updated -> partition of their last message


class Message(NamedTuple):
    """A tuple, not a dataclass: one is built per event on the hot path."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


class Batch:
    """A batch of messages as columns, so the worker builds it from Kafka in a few C-level
    passes (``streams.app.kafka_batch``) instead of a tuple per message; :meth:`message`
    gives one back as a :class:`Message` (for a dead letter). Keys and timestamps serve dead
    letters only: with ``raw`` (the client's messages) they are read from it when asked for."""

    __slots__ = ("_keys", "_raw", "_timestamps", "offsets", "partitions", "topics", "values")

    def __init__(self, keys: list[bytes | None] | None, values: list[bytes | None], topics: list[str],
                 partitions: list[int], offsets: list[int], timestamps: list[int | None] | None, raw: Any = None):
        self._keys, self.values, self.topics = keys, values, topics
        self.partitions, self.offsets, self._timestamps, self._raw = partitions, offsets, timestamps, raw

    @classmethod
    def of(cls, msgs: Iterable[Message]) -> Batch:
        columns = tuple(map(list, zip(*msgs)))
        return cls(*columns) if columns else cls([], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.values)

    def message(self, i: int) -> Message:
        if self._raw is not None:
            key, timestamp = self._raw[i].key(), self._raw[i].timestamp()[1]
        else:
            key, timestamp = self._keys[i], self._timestamps[i]
        return Message(key, self.values[i], self.topics[i], self.partitions[i], self.offsets[i], timestamp)


MAX_DEAD_LETTER_VALUE = 900_000  # with the envelope, under the broker's default 1 MB message limit


def dead_letter(msg: Message, reason: str, error_type: str, worker_id: str, now_ms: int) -> bytes:
    value = msg.value
    if value is not None and len(value) > MAX_DEAD_LETTER_VALUE:  # else its delivery fails and stops the worker
        reason = f"{reason[:3000]} [original value cut from {len(value):,} bytes; whole at its source offset]"
        value = value[:MAX_DEAD_LETTER_VALUE]
    return DEAD_LETTER.encode(
        {
            "schema_version": DEAD_LETTER.version,
            "original_key": msg.key,
            "original_value": value,
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


def handle(
    monitor: Monitor, msg: Message, now_ms: int, out: Outgoing | None = None, sources: Mapping[str, Source] | None = None,
    limits: EventLimits = DEFAULT_LIMITS,
) -> Outgoing:
    """Process one message: a batch of one (see :func:`handle_batch`)."""
    return handle_batch(monitor, [msg], now_ms, sources, limits, out)


def handle_batch(
    monitor: Monitor,
    msgs: Batch | Iterable[Message],
    now_ms: int,
    sources: Mapping[str, Source] | None = None,
    limits: EventLimits = DEFAULT_LIMITS,
    out: Outgoing | None = None,
) -> Outgoing:
    """Decode a batch, hand its events to the monitor at once, encode what comes back.

    A message of a user's own topic (a key of ``sources``) is mapped onto the canonical
    event first, and a bridged source's event is forwarded to the events topic instead of
    monitored here; anything else must be a canonical event (Avro or JSON). A batch shares
    one Outgoing and one clock reading.
    """
    if out is None:
        out = Outgoing()
    batch = msgs if isinstance(msgs, Batch) else Batch.of(msgs)
    worker = monitor.config.worker_id
    cols = None if sources else decode_columns(batch.values, limits)
    if cols is not None:  # the usual batch: all sound events of a fixed feature set, read into columns
        return _observed(monitor, batch, range(len(batch)), None, cols, now_ms, out)
    if sources:
        decoded = [_source_event(batch.message(i), sources, limits, out) for i in range(len(batch))]
    else:
        decoded = decode_events(batch.values, limits)
    origin: Sequence[int]  # the batch index of each item
    if set(map(type, decoded)) <= {dict}:  # every message an event to monitor
        items = list(zip(decoded, batch.topics, batch.partitions, batch.offsets))
        origin = range(len(items))
    else:
        items, origin = [], []
        for i, event in enumerate(decoded):
            if event is None:  # forwarded
                continue
            if isinstance(event, Exception):
                msg = batch.message(i)
                if isinstance(event, SchemaError):
                    out.dead_letters.append((msg.key, dead_letter(msg, str(event), "SchemaError", worker, now_ms)))
                else:
                    _failed(out, msg, event, worker, now_ms)
                continue
            items.append((event, batch.topics[i], batch.partitions[i], batch.offsets[i]))
            origin.append(i)
    if not items:
        return out
    return _observed(monitor, batch, origin, items, None, now_ms, out)


def _observed(monitor: Monitor, batch: Batch, origin: Sequence[int], items: list[Item] | None,
              cols: EventColumns | None, now_ms: int, out: Outgoing) -> Outgoing:
    """The monitor on the batch's events (``items``, or ``cols``), its records encoded into ``out``;
    ``origin``: the batch index of each event."""
    worker = monitor.config.worker_id
    try:
        if cols is not None:
            result = monitor.observe_columns(cols, batch.topics, batch.partitions, batch.offsets, now_ms)
        else:
            result = monitor.observe_batch(items, now_ms)
    except Exception as exc:  # noqa: BLE001 - the monitor itself failed: every event of the batch is a dead letter
        for i in origin:
            _failed(out, batch.message(i), exc, worker, now_ms)
        return out
    failed = {key for key, last in result.last.items() if any(last in idx for idx, _ in result.failed)}
    for idx, exc in result.failed:
        for e in idx:
            _failed(out, batch.message(origin[e]), exc, worker, now_ms)
    for key, last in sorted(result.last.items(), key=lambda kv: kv[1]):  # the last-updated slice last
        if key not in failed:
            out.touched[key] = batch.partitions[origin[last]]
            out.state = result.states[key]
    for codec, records, dest in ((ALERT, result.alerts, out.alerts), (STAT, result.stats, out.stats)):
        for record in records:
            try:
                dest.append((record["slice"].encode(), codec.encode(record)))
            except SchemaError as exc:  # a record that does not fit its schema: its event is a dead letter
                where = (record["topic"], record["partition"], record["last_offset"])
                i = next(i for i in origin if (batch.topics[i], batch.partitions[i], batch.offsets[i]) == where)
                _failed(out, batch.message(i), exc, worker, now_ms)
    return out


def _source_event(msg: Message, sources: Mapping[str, Source], limits: EventLimits, out: Outgoing
                  ) -> dict | Exception | None:
    """The canonical event of a message (mapped if it is of a user's own topic), the error
    it makes, or None when a bridged source's event was forwarded to the events topic."""
    try:
        src = sources.get(msg.topic)
        if src is None:
            return decode_event(msg.value, limits)
        event = check_limits(src.to_event(msg.value, msg.partition, msg.offset, msg.timestamp_ms), limits)
        if src.bridged:
            out.forwards.append((event["slice"].encode(), EVENT.encode(event)))
            return None
        return event
    except SchemaError as exc:  # without its traceback: its frames would hold the batch in a cycle
        return SchemaError(str(exc))
    except Exception as exc:  # noqa: BLE001 - logged with its traceback in _failed
        return exc


def _failed(out: Outgoing, msg: Message, exc: Exception, worker: str, now_ms: int) -> None:
    log.error("processing failed at %s[%d]@%d: %s: %s", msg.topic, msg.partition, msg.offset, type(exc).__name__, exc,
              exc_info=exc)  # fmt: skip
    reason = f"processing error: {type(exc).__name__}: {exc}"
    out.dead_letters.append((msg.key, dead_letter(msg, reason, type(exc).__name__, worker, now_ms)))


class CheckpointPolicy:
    """When to checkpoint, and which live slices are idle enough to drop from memory.

    A checkpoint snapshots every slice changed since its last snapshot and then commits
    the consumed offsets, so the committed position is always covered by the snapshots.
    It is due when a slice has ``every_events`` unsnapshotted events, when
    ``every_seconds`` passed (so slices that went quiet get written too), or right after
    an alert (so a crash cannot re-emit it with another ``detected_at``).
    A slice is idle when nothing reached it for ``idle_seconds`` or ``idle_events``
    events of the worker; its state stays in the snapshot table and is reloaded on its
    next event.
    """

    def __init__(
        self, every_events: int, every_seconds: float, idle_seconds: float, idle_events: int, now: float
    ):
        self.every_events, self.every_seconds = every_events, every_seconds
        self.idle_seconds, self.idle_events = idle_seconds, idle_events
        self.last_checkpoint = now
        self.events = 0  # events seen by this worker
        self.last_seen: dict[
            SliceKey, tuple[float, int]
        ] = {}  # slice -> (time, worker event count) of its last event
        self.home: dict[SliceKey, int] = {}  # slice -> partition of its last event: where its snapshot goes
        self._urgent = False

    def observed(self, monitor: Monitor, out: Outgoing, n_events: int, now: float) -> None:
        self.events += n_events
        for key, partition in out.touched.items():
            self.last_seen[key] = (now, self.events)
            self.home[key] = partition
            st = monitor.slices.get(key)
            if st is not None and st.events_since_snapshot >= self.every_events:
                self._urgent = True
        if out.alerts:
            self._urgent = True

    def due(self, now: float) -> bool:
        """Also on the timer when nothing changed: idle slices are evicted at checkpoints."""
        return self._urgent or now - self.last_checkpoint >= self.every_seconds

    def checkpointed(self, now: float) -> None:
        self.last_checkpoint, self._urgent = now, False

    def idle(self, now: float) -> list[SliceKey]:
        """Slices to evict (call right after a checkpoint, when none of them is dirty)."""
        return [
            key
            for key, (seen_at, seen_events) in self.last_seen.items()
            if now - seen_at >= self.idle_seconds or self.events - seen_events >= self.idle_events
        ]

    def forget(self, keys: Iterable[SliceKey]) -> None:
        for key in keys:
            self.last_seen.pop(key, None)
            self.home.pop(key, None)

    def on_partitions(self, partitions: set[int]) -> list[SliceKey]:
        """Live slices whose events come from ``partitions``."""
        return [key for key, p in self.home.items() if p in partitions]


def dirty(monitor: Monitor) -> Iterable[SliceState]:
    """Live slices with events not yet in a snapshot."""
    return (st for st in monitor.slices.values() if st.events_since_snapshot > 0)
