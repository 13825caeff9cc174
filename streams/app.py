"""The streams worker: Kafka batches in, the pure monitor in the middle, records out.

Why not a faust agent: faust hands every message through its stream machinery (several
asyncio tasks and event-loop turns per message), which tops out at ~6,000 events/s on a
2-core machine even when the agent does nothing (``take_events`` included). Here librdkafka fetches and produces in
C, a batch of up to ``stream_batch_size`` messages goes through :func:`handle` in one
loop, and the per-event cost is the monitor's own.

State and guarantees (docs/operations.md, "Guarantees"), made simple by one rule: **the
commit is the checkpoint**. Detector state lives in memory per (model, slice). A
checkpoint (every ``snapshot_every_events`` events of a slice, every
``snapshot_every_seconds``, right after an alert, on revocation and on clean shutdown)

1. flushes the alerts, stats and dead letters produced so far (encoding the snapshots of
   step 2 while they are on their way),
2. writes a snapshot of every slice changed since its last one to a compacted changelog
   topic, co-partitioned with the events (the partition a slice's events come from), and
   flushes it,
3. commits the consumed offsets.

So the committed offset of a partition never runs ahead of what the snapshots in it
cover: a restarted or rebalanced worker restores the latest snapshot of each slice and
resumes from the committed offset, with nothing to replay and no warm-up from zero. A
snapshot may be *newer* than the commit (a crash between steps 2 and 3); the monitor skips
offsets it already applied, and step 1 made the outputs of those events durable first.
After a crash, events since the last commit are processed again (at-least-once) and
reproduce the same alert ids; checkpointing right after an alert keeps that window empty
for alerts in practice.

Memory is bounded by evicting slices idle for ``evict_idle_seconds`` or
``evict_idle_events`` at a checkpoint (so they are clean): their snapshot stays in the
in-process table (compressed) and is reloaded on their next event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from operator import methodcaller

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from runtime import metrics
from runtime.kafka import usable
from runtime.kafka_logs import kafka_log_config
from schemas.errors import ConfigError, DriftError
from schemas.event_columns import warm_up
from schemas.events import EventLimits
from schemas.settings import Settings
from streams.changelog import SnapshotTable, read_changelog, state_key, state_topic
from streams.config import build_monitor, model_config
from streams.monitor import Monitor
from streams.processing import Batch, CheckpointPolicy, Outgoing, SliceKey, dirty, handle_batch
from streams.sources import build_sources
from streams.state import SliceState, StaleSnapshot, decode_state, encode_state

log = logging.getLogger(__name__)

class DeliveryFailed(DriftError):
    """The broker did not take an output or a snapshot: stop without committing, replay on restart."""


class StreamsApp:
    """One worker of the ``app_id`` consumer group; run it with :meth:`run`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.topic = settings.topics.events
        self.state_topic = state_topic(settings)
        self.table = SnapshotTable()
        config = model_config(settings)
        self.monitor: Monitor = build_monitor(settings, loader=self._load, config=config)
        base_dir = settings.detection_config.parent if settings.detection_config else None
        self.sources = build_sources(config.sources, base_dir) if config is not None else {}
        self.limits = EventLimits.from_settings(settings)  # ids, feature count: longer is dead-lettered
        self.topics = [self.topic, *self.sources]  # users' own topics, mapped onto events (streams/sources.py)
        # bridged sources' partitions carry no slice state: their events are forwarded to the events topic
        self.bridged = frozenset(t for t, s in self.sources.items() if s.bridged)
        self.policy = CheckpointPolicy(
            settings.snapshot_every_events,
            settings.snapshot_every_seconds,
            settings.evict_idle_seconds,
            settings.evict_idle_events,
            time.monotonic(),
        )
        # (topic, partition) -> next offset to commit. Slices and snapshots go by partition
        # number: the (default) range assignor gives one worker the same partition numbers
        # of every subscribed topic.
        self.positions: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.restored = 0  # slices restored from snapshots, for logs and tests
        self.seconds = dict.fromkeys(("total", "consume", "process", "checkpoint"), 0.0)  # where time goes
        self._failures: list[str] = []
        self.failed = False  # a delivery failed: stop without committing, replay on restart
        self._state_partitions = settings.events_partitions
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._ensure_topics()
        t0 = time.monotonic()
        warm_up()  # the columnar decoder, compiled or loaded from numba's cache
        log.info("columnar event decoder ready in %.1fs", time.monotonic() - t0)
        self.producer = Producer(
            self.settings.producer_config(**{"message.max.bytes": 16 * 1024 * 1024, **kafka_log_config(log)})
        )
        self.consumer = Consumer(
            self.settings.confluent_config(
                **{
                    "group.id": self.settings.app_id,
                    "client.id": self.settings.worker_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": int(self.settings.streams_session_timeout_seconds * 1000),
                    **metrics.stats_config(self.settings),  # consumer lag gauges (runtime/metrics.py)
                    **kafka_log_config(log),  # repeated connection errors: once per interval
                }
            )
        )
        self.consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then checkpoint and leave the group."""
        if self.consumer is None:
            self.start()
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                msgs = self.consumer.consume(
                    self.settings.stream_batch_size, self.settings.stream_batch_seconds
                )
                now = time.monotonic()
                self.seconds["consume"] += now - t0
                if msgs:
                    self.process(msgs, now)
                self.producer.poll(0)
                if self.policy.due(now):
                    self.checkpoint(now)
                self.seconds["total"] += time.monotonic() - t0
            self.checkpoint(time.monotonic())
            log.info(
                "clean shutdown: checkpointed %d live slices, committed %s; %d events, seconds %s",
                len(self.monitor.slices), self.committed, self.policy.events,
                {k: round(v, 2) for k, v in self.seconds.items()},
            )  # fmt: skip
        except BaseException:
            self.failed = True  # closing revokes the partitions: that must not commit a half-done batch
            raise
        finally:
            self.consumer.close()  # leaves the group: the partitions move on at once
            self.producer.flush(30)

    # ------------------------------------------------------------------ processing
    def process(self, msgs: list, now: float) -> Outgoing:
        t0 = time.monotonic()
        batch = kafka_batch(msgs)
        out = handle_batch(self.monitor, batch, int(time.time() * 1000), self.sources, self.limits)
        metrics.observe_streams(out, len(batch), self.topic)
        self._send(out)
        # the last offset of each partition wins: a consumed batch is in offset order per partition
        self.positions.update(zip(zip(batch.topics, batch.partitions), map(_NEXT, batch.offsets)))
        self.policy.observed(self.monitor, out, len(batch), now)
        self.seconds["process"] += time.monotonic() - t0
        return out

    def _send(self, out: Outgoing) -> None:
        topics = self.settings.topics
        for topic, records in (
            (topics.alerts, out.alerts),
            (topics.stats, out.stats),
            (topics.dlq, out.dead_letters),
            (topics.events, out.forwards),
        ):
            for key, value in records:
                self._produce(topic, key, value)

    def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        kwargs = {"partition": partition} if partition is not None else {}
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._delivered, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, now: float, partitions: set[int] | None = None,
                   bridged: set[tuple[str, int]] = frozenset()) -> None:
        """Outputs durable, then changed slices' snapshots durable, then commit (see module doc)."""
        t0 = time.monotonic()
        snapshots = self._snapshots(partitions)  # encoded while the outputs are on their way
        self._flush()
        for home, name, blob in snapshots:
            self._produce(self.state_topic, json.dumps(name).encode(), blob, partition=home)
        written = len(snapshots)
        if written:
            self._flush()
        if partitions is None:
            self._evict(now)
            self.policy.checkpointed(now)
        self._commit(partitions, bridged)
        self.seconds["checkpoint"] += time.monotonic() - t0
        log.debug("checkpoint: %d snapshots, committed %s", written, self.committed)

    def _flush(self) -> None:
        remaining = self.producer.flush(60)
        if remaining or self._failures:
            self.failed = True
            raise DeliveryFailed(f"{remaining} records undelivered; errors: {self._failures[:3]}")

    def _snapshots(self, partitions: set[int] | None) -> list[tuple[int, str, bytes]]:
        """(changelog partition, key, snapshot) of each changed slice (of ``partitions``), kept in the table."""
        out = []
        for st in list(dirty(self.monitor)):
            key = (st.model, st.slice)
            home = self.policy.home.get(key, 0) % self._state_partitions
            if partitions is not None and home not in partitions:
                continue
            st.events_since_snapshot = 0
            blob = encode_state(st)
            name = state_key(*key)
            self.table.put(home, name, blob)
            out.append((home, name, blob))
        return out

    def _evict(self, now: float) -> None:
        idle = self.policy.idle(now)
        self._forget(idle)
        if idle:
            log.info("evicted %d idle slices (state kept in the snapshot table)", len(idle))

    def _forget(self, keys: Iterable[SliceKey]) -> None:
        keys = list(keys)
        for key in keys:
            self.monitor.slices.pop(key, None)
        self.policy.forget(keys)

    def _commit(self, partitions: set[int] | None, bridged: set[tuple[str, int]] = frozenset()) -> None:
        """Commit the positions of every partition (None), or of the state ``partitions`` and the
        ``bridged`` source partitions named."""
        offsets = {
            tp: o for tp, o in self.positions.items()
            if (partitions is None or tp in bridged or (tp[1] in partitions and tp[0] not in self.bridged))
            and self.committed.get(tp) != o
        }  # fmt: skip
        if not offsets:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:  # e.g. a rebalance under way: safe to leave for the next checkpoint
            log.warning(
                "commit of %s failed (%s); the next checkpoint or the next owner takes it", offsets, exc
            )
            return
        self.committed.update(offsets)

    # ------------------------------------------------------------------ rebalancing
    def _split(self, partitions: list[TopicPartition]) -> tuple[set[int], set[tuple[str, int]]]:
        """(partition numbers that carry slice state, bridged source partitions)."""
        state = {tp.partition for tp in partitions if tp.topic not in self.bridged}
        return state, {(tp.topic, tp.partition) for tp in partitions if tp.topic in self.bridged}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        state, _bridged = self._split(partitions)
        owned = {p % self._state_partitions for p in state}  # the changelog's partitions
        n = self._restore(owned)
        log.info("assigned %s partitions %s: %d slice snapshots in the table", self.topics, sorted(owned), n)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Checkpoint what is leaving, so its next owner resumes exactly where this one stopped."""
        gone, bridged = self._split(partitions)
        if (gone or bridged) and not self.failed:  # after a failed delivery nothing more may be committed
            self.checkpoint(time.monotonic(), gone, bridged)
        self._drop(gone, bridged)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost, not revoked (e.g. a session timeout): the new owner resumes from the last checkpoint."""
        self._drop(*self._split(partitions))

    def _drop(self, partitions: set[int], bridged: set[tuple[str, int]] = frozenset()) -> None:
        self._forget(self.policy.on_partitions(partitions))
        self.table.drop(partitions)

        def leaving(tp: tuple[str, int]) -> bool:
            return tp in bridged or (tp[1] in partitions and tp[0] not in self.bridged)

        for tp in [tp for tp in self.positions if leaving(tp)]:
            self.positions.pop(tp, None)
        for tp in [tp for tp in self.committed if leaving(tp)]:
            self.committed.pop(tp, None)

    def _restore(self, partitions: set[int]) -> int:
        for partition, key, value in read_changelog(self.settings, self.state_topic, partitions):
            self.table.put(partition, json.loads(key), value)
        return len(self.table)

    def _load(self, model: str, slice_: str) -> SliceState | None:
        """The monitor's loader: a slice's snapshot, the first time it is seen (again)."""
        blob = self.table.get(state_key(model, slice_))
        if not blob:
            return None
        try:
            st = decode_state(blob)
        except StaleSnapshot as exc:
            log.warning("snapshot of model=%s slice=%s is from older code (%s); starting it fresh", model, slice_, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - an unreadable snapshot (old code) means a fresh start
            log.warning(
                "snapshot of model=%s slice=%s unreadable (%s); starting it fresh", model, slice_, exc
            )
            return None
        st.events_since_snapshot = 0
        self.restored += 1
        log.info(
            "restored detector state for model=%s slice=%s: %d events, offsets %s",
            model, slice_, getattr(st, "events", -1), st.last_offset,
        )  # fmt: skip
        return st

    # ------------------------------------------------------------------ topics
    def _ensure_topics(self) -> None:
        """The pipeline topics, and the compacted changelog with as many partitions as the events."""
        from runtime.topics import TopicSpec, create_topics, ensure_topics, partition_counts

        ensure_topics(self.settings)
        counts = partition_counts(self.settings)
        self._state_partitions = counts.get(self.topic) or self.settings.events_partitions
        check_source_partitions(counts, self.topic, [t for t in self.sources if t not in self.bridged])
        spec = TopicSpec(
            self.state_topic,
            self._state_partitions,
            self.settings.replication_factor,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(10 * 60 * 1000),  # roll often, so restores read few old snapshots
                "min.cleanable.dirty.ratio": "0.1",
                "max.message.bytes": str(16 * 1024 * 1024),
            },
        )
        create_topics(self.settings, [spec])


_VALUE, _TOPIC, _PARTITION, _OFFSET, _ERROR = map(methodcaller, ("value", "topic", "partition", "offset", "error"))
_NEXT = (1).__add__


def kafka_batch(msgs: list[KafkaMessage]) -> Batch:
    """confluent-kafka messages as a :class:`Batch`, in C-level passes (a Python step per
    message cost 7% of the worker; keys and timestamps are read only for a dead letter);
    events, and errors ``usable`` lets through, are kept."""
    if any(map(_ERROR, msgs)):
        msgs = [m for m in msgs if m.error() is None or usable(m, log)]
    return Batch(None, list(map(_VALUE, msgs)), list(map(_TOPIC, msgs)), list(map(_PARTITION, msgs)),
                 list(map(_OFFSET, msgs)), None, raw=msgs)


def check_source_partitions(counts: dict[str, int], events_topic: str, sources: Iterable[str]) -> None:
    """Users' topics monitored in place (``route: direct``) must have as many partitions as the events topic.

    Slices, snapshots and commits go by partition number (the range assignor gives a worker the
    same numbers of every topic), so a topic with another count would check a slice's state
    into the wrong changelog partition, or let two workers own one.
    """
    expected = counts.get(events_topic)
    wrong = {t: counts[t] for t in sources if t in counts and expected and counts[t] != expected}
    if wrong:
        raise ConfigError(
            f"source topic(s) {wrong} must have as many partitions as {events_topic} ({expected}): "
            "slices and checkpoints go by partition number; use route: bridge (the default) or set DRIFT_EVENTS_PARTITIONS"
        )
    for t in sources:
        if t not in counts:
            log.warning("source topic %s does not exist yet; its partitions will be read once it does", t)


def create_app(settings: Settings) -> StreamsApp:
    return StreamsApp(settings)
