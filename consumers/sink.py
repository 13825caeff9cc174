"""ClickHouse sink: stats, alerts, dead letters and retrain records from Kafka into tables.

At-least-once: auto-commit is off; a batch is inserted into ClickHouse first and only
then are its offsets committed (synchronously). A crash in between replays the batch,
and the tables' ReplacingMergeTree keys collapse the copies; within one process a
bounded set of recently inserted alert_ids also skips exact replays up front.

A message that cannot be decoded is written to ``dead_letters`` with the reason and
its topic/partition/offset, and the sink moves on; it never produces to the dead-letter
topic itself (the sink reads that topic, so that could loop). When an insert fails the
offsets stay uncommitted, the batch is kept, the partitions are paused (so polling keeps
the group membership alive without piling up more data) and the insert is retried with
exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, TopicPartition

from consumers.query_server import start_query_server, stop_query_server
from consumers.rows import DEAD_LETTERS, TABLES, Row, TableSpec, dead_letter_record, table_for_topic
from consumers.sink_batch import Batch, Entry, RecentIds
from consumers.store import apply_schema, open_clickhouse
from runtime import metrics
from runtime.kafka import pause_assignment, usable
from runtime.kafka_logs import kafka_log_config
from runtime.logs import kafka_fields
from runtime.service import run_until_stopped, serve
from schemas.errors import DriftError
from schemas.settings import Settings

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
MAX_POLL_WAIT = 0.5


@dataclass
class SinkStats:
    consumed: int = 0
    inserted: dict[str, int] = field(default_factory=dict)  # table -> rows written (retries count again)
    dead_lettered: int = 0  # decode failures recorded by the sink itself
    replays_skipped: int = 0
    flushes: int = 0
    insert_failures: int = 0
    commit_failures: int = 0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ClickHouseSink:
    """A confluent-kafka consumer service writing the sink topics to ClickHouse.

    ``client``: a clickhouse_connect client (default: :func:`open_clickhouse`; the sink
    does not close it). ``consumer``: an object with confluent_kafka.Consumer's interface
    (default: a real Consumer for ``settings.sink_group``); tests pass fakes.
    """

    def __init__(self, settings: Settings, client: Any = None, consumer: Any = None):
        self.settings = settings
        self.client = client if client is not None else open_clickhouse(settings)
        apply_schema(self.client)  # idempotent; the sink owns the store it writes
        self.routes: dict[str, TableSpec] = table_for_topic(settings.topics)
        self.stats = SinkStats()
        self.batch = Batch()
        self.recent = RecentIds()
        self._consumer = consumer
        self._subscribed = False
        self._backoff = 0.0
        self._retry_at: float | None = None  # set while a failed batch waits for its retry
        self._last_activity = time.monotonic()
        self._assigned = False  # a first partition assignment arrived

    # --- Kafka edge --------------------------------------------------------------------

    def consumer_config(self) -> dict[str, Any]:
        return self.settings.confluent_config(
            **{
                "group.id": self.settings.sink_group,
                "client.id": f"drift-sink-{self.settings.worker_id}",
                "enable.auto.commit": False,  # commit only after the insert succeeded
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "session.timeout.ms": int(self.settings.kafka_session_timeout_seconds * 1000),
                **kafka_log_config(log),  # librdkafka's lines through logging, repeats once per interval
                **metrics.stats_config(self.settings),  # consumer lag gauges
            }
        )

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer(self.consumer_config())
        if not self._subscribed:
            self._consumer.subscribe(
                list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            self._subscribed = True
        return self._consumer

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("sink assigned %s", _tps(partitions))
        self._assigned = True
        self._last_activity = time.monotonic()

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Commit what we can while we still own the partitions; forget the rest."""
        log.info("sink revoked %s", _tps(partitions))
        if self.batch and not self.flush():
            self.batch.drop({(p.topic, p.partition) for p in partitions})

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.warning("sink lost %s; their uncommitted rows are left to the new owner", _tps(partitions))
        self.batch.drop({(p.topic, p.partition) for p in partitions})

    # --- message -> batch (no I/O) -----------------------------------------------------------

    def handle(self, msg: Any) -> None:
        """Add one polled message to the batch: its row, or a dead letter if undecodable."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        self.stats.consumed += 1
        self._last_activity = time.monotonic()
        spec = self.routes.get(topic)
        try:
            if spec is None:
                raise DriftError(f"the sink does not read topic {topic!r}")
            record = spec.codec.decode(msg.value() or b"")
            entry = Entry(spec.table, spec.to_row(record), spec.replay_key(record) if spec.replay_key else None)
        except (DriftError, KeyError, TypeError, ValueError) as exc:
            log.warning("undecodable message at %s[%d]@%d: %s", topic, partition, offset, exc,
                        extra=kafka_fields(msg))  # fmt: skip
            metrics.DEAD_LETTERS.labels("sink").inc()
            entry = self._dead_letter(msg, exc)
            self.stats.dead_lettered += 1
        if entry.replay_key and (entry.replay_key in self.recent or entry.replay_key in self.batch.replay_keys):
            self.stats.replays_skipped += 1
            entry = None
        self.batch.add((topic, partition), offset, entry)

    def _dead_letter(self, msg: Any, exc: BaseException) -> Entry:
        ts_type, ts = msg.timestamp()
        record = dead_letter_record(
            key=msg.key(),
            value=msg.value(),
            error=exc,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            timestamp_ms=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
            worker_id=self.settings.worker_id,
            failed_at_ms=now_ms(),
        )
        return Entry(DEAD_LETTERS.table, DEAD_LETTERS.to_row(record))

    # --- batch -> ClickHouse -> commit ------------------------------------------------------

    def due(self) -> bool:
        if not self.batch:
            return False
        if len(self.batch) >= self.settings.sink_batch_size:
            return True
        return time.monotonic() - self.batch.started >= self.settings.sink_flush_seconds

    def flush(self) -> bool:
        """Insert the batch, then commit its offsets. False (batch kept) if the insert failed."""
        if not self.batch:
            return True
        try:
            self._insert(self.batch.by_table())
        except Exception as exc:  # noqa: BLE001 - any store error: keep the batch, retry later
            self.stats.insert_failures += 1
            metrics.SINK_INSERT_FAILURES.inc()
            log.error("ClickHouse insert failed, %d messages kept for retry (offsets %s): %s",
                      len(self.batch), _offsets(self.batch.offsets()), exc)  # fmt: skip
            return False
        self._commit(self.batch.offsets())
        for key in self.batch.replay_keys:
            self.recent.add(key)
        self.stats.flushes += 1
        self.batch.clear()
        return True

    def _insert(self, tables: dict[str, list[Row]]) -> None:
        # a retry after a partial failure re-inserts earlier tables: the engines collapse it
        for table, rows in tables.items():
            self.client.insert(table, rows, column_names=list(TABLES[table].columns))
            self.stats.inserted[table] = self.stats.inserted.get(table, 0) + len(rows)
            metrics.SINK_ROWS.labels(table).inc(len(rows))

    def _commit(self, offsets: list[TopicPartition]) -> None:
        # a failed commit loses nothing: the rows are stored, the messages come again and collapse
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            self.stats.commit_failures += 1
            log.warning("offset commit failed after insert (%s): %s", _offsets(offsets), exc)
            return
        failed = [p for p in result if getattr(p, "error", None)]
        if failed:
            self.stats.commit_failures += 1
            log.warning("offset commit failed for %s: %s", _offsets(failed), failed[0].error)

    # --- the loop -----------------------------------------------------------------------

    def step(self) -> None:
        """One iteration: flush or retry when due, else poll one message."""
        if self._retry_at is not None:
            self._retry_step()
            return
        if self.due() and not self.flush():
            self._start_backoff()
            return
        msg = self.consumer.poll(self._poll_timeout())
        if msg is None:
            return
        if msg.error():
            self._on_kafka_error(msg)
            return
        self.handle(msg)

    def _poll_timeout(self) -> float:
        if not self.batch:
            return MAX_POLL_WAIT
        left = self.settings.sink_flush_seconds - (time.monotonic() - self.batch.started)
        return min(MAX_POLL_WAIT, max(0.0, left))

    def _on_kafka_error(self, msg: Any) -> None:
        usable(msg, log, f"consumer at {msg.topic()}[{msg.partition()}]@{msg.offset()}")

    def _start_backoff(self) -> None:
        self._backoff = min(BACKOFF_MAX, self._backoff * 2 or BACKOFF_START)
        self._retry_at = time.monotonic() + self._backoff
        self._pause(True)
        log.info("retrying the insert in %.1fs", self._backoff)

    def _retry_step(self) -> None:
        if time.monotonic() < self._retry_at:
            # poll keeps group membership (and rebalance callbacks) alive; paused = no data. Never a
            # negative timeout: librdkafka reads that as "wait forever" (the retry time may pass meanwhile)
            msg = self.consumer.poll(max(0.0, min(MAX_POLL_WAIT, self._retry_at - time.monotonic())))
            if msg is not None and not msg.error():
                self.handle(msg)
            return
        if self.flush():
            self._retry_at, self._backoff = None, 0.0
            self._pause(False)
        else:
            self._start_backoff()

    def _pause(self, pause: bool) -> None:
        pause_assignment(self.consumer, pause, log)

    def run(self, stop_event: threading.Event) -> SinkStats:
        """Consume until stop_event is set; then drain and close."""
        log.info("sink reading %s into ClickHouse (group %s)", ", ".join(self.routes), self.settings.sink_group)
        # the sink holds the embedded store: it answers read-only SQL for driftctl query/report
        query_server = start_query_server(self.settings)
        try:
            run_until_stopped(stop_event, self.step)
        finally:
            stop_query_server(query_server)
            self.close()
        return self.stats

    def run_until_idle(
        self, idle_seconds: float, max_seconds: float | None = None, assign_timeout: float = 60.0
    ) -> SinkStats:
        """Consume until nothing arrived for idle_seconds, then drain; the consumer stays open.

        The idle clock starts at the first partition assignment (joining a group takes a
        few seconds) and restarts on every message; it gives up when no assignment came
        within assign_timeout, and always stops after max_seconds.
        """
        started = time.monotonic()
        while True:
            self.step()
            now = time.monotonic()
            if self._assigned:
                if now - self._last_activity >= idle_seconds and self._retry_at is None:
                    break
            elif now - started >= assign_timeout:
                log.warning("no partitions assigned within %.0fs; stopping", assign_timeout)
                break
            if max_seconds is not None and now - started >= max_seconds:
                break
        self.drain()
        return self.stats

    def drain(self, timeout: float = 10.0) -> bool:
        """Flush the pending batch, retrying until timeout; True if nothing is left pending."""
        deadline = time.monotonic() + timeout
        delay = BACKOFF_START
        while not self.flush():
            if time.monotonic() + delay > deadline:
                log.error("drain gave up: %d messages not stored (offsets not committed)", len(self.batch))
                return False
            time.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)
        if self._retry_at is not None:
            self._retry_at, self._backoff = None, 0.0
            self._pause(False)
        return True

    def close(self) -> None:
        """Drain what is pending and leave the consumer group. The ClickHouse client stays open."""
        try:
            if self._consumer is not None:
                self.drain()
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
                self._subscribed = False
        log.info("sink closed: %s", self.stats)


def _tps(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"


def _offsets(offsets: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]@{p.offset}" for p in offsets)


def run(settings: Settings) -> None:
    """``driftctl run``'s sink process: consume into ClickHouse until SIGTERM/SIGINT."""
    serve("sink", lambda stop: ClickHouseSink(settings).run(stop))
