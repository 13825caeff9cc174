"""Read a DataSnapshot (topic + exact offset ranges) back from Kafka.

Reproducibility is the point: a RetrainRequest names offsets, not "the latest data", so a job
re-run reads exactly the same events. The reader assigns partitions and seeks (no group
membership, no commits), stops each partition at its exclusive end offset, skips messages that
do not decode (``schemas.events.decode_event``, the streams worker's decoder and limits: counted
and logged; the streams worker already sent them to the DLQ) and applies
``labelled_only`` and, when the snapshot names one, ``before_event_time`` (events from that
epoch-millisecond time on are left out: what a first version's reference data uses to stop at a
drift's onset on every partition). It returns every slice in the ranges: the job trains on the
slice filter and checks the other slices for regressions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from contextlib import closing
from typing import Any

from confluent_kafka import Consumer

from runtime.kafka import RangeReadTimeout, read_ranges, watermarks
from schemas.errors import ConfigError, InfraError, SchemaError
from schemas.events import EventLimits, decode_event
from schemas.settings import Settings

log = logging.getLogger(__name__)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        settings.confluent_config(
            **{
                "group.id": f"snapshot-{uuid.uuid4().hex[:8]}",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
    )


def read_snapshot(settings: Settings, snapshot: Mapping[str, Any], timeout: float = 60.0) -> list[dict]:
    """The decoded events of ``snapshot['ranges']`` (end exclusive), labelled ones only if asked,
    older than ``snapshot['before_event_time']`` if it names one."""
    topic = snapshot["topic"]
    keep = snapshot_filter(snapshot)
    wanted = {
        int(r["partition"]): (int(r["start_offset"]), int(r["end_offset"]))
        for r in snapshot["ranges"]
        if int(r["end_offset"]) > int(r["start_offset"])
    }
    if not wanted:
        return []
    limits = EventLimits.from_settings(settings)  # what the streams worker dead-letters is skipped here too
    by_partition: dict[int, list[dict]] = {}  # fetches interleave partitions in no fixed order
    skipped = 0

    def clip(p: int, low: int, high: int) -> tuple[int, int]:
        start, end = wanted[p]
        if end > high:  # a range past the end would never finish
            log.warning("%s[%d]: range end %d beyond the log end %d; reading to %d", topic, p, end, high, high)
            end = high
        if start < low:
            log.warning("%s[%d]: offsets %d..%d were deleted by retention", topic, p, start, low)
        return max(start, low), end

    def fail(msg: Any) -> None:
        raise InfraError(f"snapshot of {topic}[{msg.partition()}]: {msg.error()}")

    records = read_ranges(settings, topic, wanted, bounds=clip, timeout=timeout, on_error=fail,
                          group=f"snapshot-{uuid.uuid4().hex[:8]}", what=f"snapshot of {topic}")  # fmt: skip
    try:
        with closing(records):
            for msg in records:
                try:
                    event = decode_event(msg.value(), limits)
                except SchemaError as exc:
                    skipped += 1
                    log.debug("snapshot %s[%d]@%d skipped: %s", topic, msg.partition(), msg.offset(), exc)
                else:
                    if keep(event):
                        by_partition.setdefault(msg.partition(), []).append(event)
    except RangeReadTimeout as exc:
        raise InfraError(
            f"snapshot of {topic}: partitions {sorted(exc.pending)} not read to their end offsets within "
            f"{timeout:.0f}s ({sum(map(len, by_partition.values()))} events so far)"
        ) from None
    if skipped:
        log.warning("snapshot of %s: skipped %d undecodable message(s)", topic, skipped)
    return [e for p in sorted(by_partition) for e in by_partition[p]]  # partition then offset order: reproducible


def snapshot_filter(snapshot: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """The snapshot's event filter: ``labelled_only`` (default true) and ``before_event_time``."""
    labelled_only = snapshot.get("labelled_only", True)
    before = snapshot.get("before_event_time")
    if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
        raise ConfigError(f"snapshot before_event_time: expected epoch milliseconds (int) or null, got {before!r}")

    def keep(event: Mapping[str, Any]) -> bool:
        if labelled_only and event.get("label") is None:
            return False
        return before is None or event["event_time"] < before

    return keep


def latest_ranges(settings: Settings, topic: str, max_events_per_partition: int | None = None) -> list[dict]:
    """Offset ranges of the most recent ``max_events_per_partition`` messages of every partition
    (None: everything still retained)."""
    consumer = _consumer(settings)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic]
        if parts.error is not None:
            raise InfraError(f"topic {topic}: {parts.error}")
        ranges = []
        for p, (low, high) in sorted(watermarks(consumer, topic, parts.partitions).items()):
            start = low if max_events_per_partition is None else max(low, high - max_events_per_partition)
            if high > start:
                ranges.append({"partition": p, "start_offset": start, "end_offset": high})
        return ranges
    finally:
        consumer.close()


def reference_snapshot(settings: Settings, snapshot: Mapping[str, Any], max_events_per_partition: int,
                       before_event_time: int | None = None) -> dict:
    """The oldest retained events of ``snapshot``'s topic that come before its own ranges and,
    if given, before ``before_event_time`` (epoch ms).

    What a model with no version yet is bootstrapped on: the data from before the drift that
    triggered its first request (the request's snapshot starts at the estimated onset). A
    partition the snapshot does not name contributes its oldest events. Every slice is kept.
    The offset bound alone stops only the alerted partitions at the onset (the snapshot holds
    just the latest events of the others), hence the event-time bound for every partition.
    """
    topic = snapshot["topic"]
    starts = {int(r["partition"]): int(r["start_offset"]) for r in snapshot["ranges"]}
    ranges = []
    for r in latest_ranges(settings, topic):  # everything still retained, per partition
        p, low = r["partition"], r["start_offset"]
        end = min(low + max_events_per_partition, starts.get(p, r["end_offset"]))
        if end > low:
            ranges.append({"partition": p, "start_offset": low, "end_offset": end})
    out: dict[str, Any] = {"topic": topic, "ranges": ranges, "slice_filter": [], "labelled_only": True}
    if before_event_time is not None:
        out["before_event_time"] = int(before_event_time)
    return out
