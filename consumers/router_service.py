"""The policy router as a Kafka service (``python -m deploy.services router``).

Reads alerts (to route), retrain results (to free budget and escalate) and drift stats (to
know each model's slices) in one consumer group (``router_group``), feeds them to the pure
:class:`consumers.router.Router`, and produces the RetrainRequests it emits (keyed by
:func:`consumers.router_requests.request_key`).

At-least-once, like every consumer here: offsets are committed only after the requests
produced so far are acknowledged, and never past an alert still waiting in a coalesce group
(its request is not out yet). A crash replays those alerts; request ids are deterministic, and
on start the router rebuilds its cooldowns, budget and already-requested alert ids from the
latest ``router_restore_events`` records per partition of the requests and results topics (and
of the alerts topic, so a restored request can still be escalated).
A message that cannot be decoded, or that the policy fails on (logged with its traceback), is
skipped (the dead-letter topic is for events).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from consumers import router_restore
from consumers.router import Router, RouterConfig
from consumers.router_requests import request_key
from runtime import metrics
from runtime.kafka import (
    RangeReadTimeout,
    high_watermarks,
    is_transient,
    publish_and_wait,
    read_ranges,
    usable,
)
from runtime.kafka_logs import kafka_log_config
from runtime.service import run_until_stopped, serve
from schemas.codec import ALERT, RETRAIN_REQUEST, RETRAIN_RESULT, STAT, RecordCodec
from schemas.errors import DriftError, InfraError, SchemaError
from schemas.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
COMMIT_EVERY_SECONDS = 1.0
END_OFFSETS_EVERY_SECONDS = 1.0
PARTITIONS_EVERY_SECONDS = 60.0
PUBLISH_TIMEOUT = 30.0

TP = tuple[str, int]


def make_planner(settings: Settings) -> Callable[..., Any]:
    """retrain_jobs' dependency map with the current manifest of the model from the registry."""
    from retrain_jobs.dependency import plan
    from retrain_jobs.registry import Registry

    registry = Registry(settings.registry_dir)

    def planner(model: str, alerts: list[dict], tier: str | None, n_seen: int | None) -> Any:
        return plan(registry.current(model), alerts, tier=tier, n_slices_seen=n_seen,
                    broad_share=settings.router_broad_fraction, broad_min_slices=settings.router_broad_min_slices)

    return planner


def read_tail(settings: Settings, topic: str, codec: RecordCodec, per_partition: int, timeout: float = 30.0) -> list[dict]:
    """The latest ``per_partition`` records of each partition of ``topic``, decoded (bad ones skipped);
    what was read so far if that takes over ``timeout`` s."""
    if per_partition <= 0:
        return []
    out: list[dict] = []
    records = read_ranges(settings, topic, bounds=lambda _p, low, high: (max(low, high - per_partition), high),
                          timeout=timeout, group=f"{settings.router_group}-restore", what="restore")  # fmt: skip
    try:
        with closing(records):
            for msg in records:
                try:
                    out.append(codec.decode(msg.value() or b""))
                except DriftError as exc:
                    log.warning("restore: skipping undecodable record at %s[%d]@%d: %s",
                                topic, msg.partition(), msg.offset(), exc)  # fmt: skip
    except RangeReadTimeout:
        log.warning("restore: %s not read to the end within %.0fs", topic, timeout)
    except InfraError as exc:  # the topic does not exist (yet): nothing to restore from
        log.warning("restore: %s", exc)
    return out


class RouterService:
    """The loop around the policy. ``consumer``, ``producer``, ``planner``, ``clock`` and
    ``end_offsets`` (partition -> end of the events topic) default to the real ones."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any = None,
        producer: Any = None,
        planner: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
        end_offsets: Callable[[], dict[int, int]] | None = None,
        restore: bool = True,
    ):
        from retrain_jobs.dependency import next_tier

        self.settings = settings
        self.topics = settings.topics
        self.policy = Router(RouterConfig.from_settings(settings), planner or make_planner(settings), next_tier)
        self.clock = clock
        self._consumer = consumer
        self.producer = producer if producer is not None else Producer(settings.producer_config(**kafka_log_config(log)))
        self._end_offsets = end_offsets
        self._ends: dict[int, int] = {}
        self._ends_at = -1e18
        self._offsets_client: Any = None
        self._event_partitions: list[int] = []
        self._partitions_at = -1e18
        self._ends_error: Exception | None = None  # the end offsets could not be read (logged once)
        self.processed: dict[TP, int] = {}  # next offset after the last handled message
        self.committed: dict[TP, int] = {}
        self.outbox: list[dict] = []  # requests emitted by the policy, not yet acknowledged
        self.produced = 0
        self.skipped = 0
        self._last_commit = 0.0
        if restore:
            self.restore()

    # --- Kafka edge --------------------------------------------------------------------

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer(
                self.settings.confluent_config(
                    **{
                        "group.id": self.settings.router_group,
                        "client.id": f"drift-router-{self.settings.worker_id}",
                        "enable.auto.commit": False,
                        "auto.offset.reset": "earliest",
                        "session.timeout.ms": int(self.settings.kafka_session_timeout_seconds * 1000),
                        **kafka_log_config(log),  # repeated connection errors: once per interval
                    }
                )
            )
            self._consumer.subscribe(
                [self.topics.alerts, self.topics.retrain_results, self.topics.stats], on_revoke=self._on_revoke
            )
        return self._consumer

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._flush_outbox()
        if not self.outbox:
            self._commit(force=True)
        gone = {(p.topic, p.partition) for p in partitions}
        dropped = self.policy.forget(gone)
        for tp in gone:
            self.processed.pop(tp, None)
            self.committed.pop(tp, None)
        if dropped:
            log.info("revoked: %d pending alerts left to the partitions' new owner", dropped)

    def restore(self) -> None:
        n = self.settings.router_restore_events
        requests = read_tail(self.settings, self.topics.retrain_requests, RETRAIN_REQUEST, n)
        results = read_tail(self.settings, self.topics.retrain_results, RETRAIN_RESULT, n)
        alerts = read_tail(self.settings, self.topics.alerts, ALERT, n) if requests else []
        router_restore.restore(self.policy, requests, results, self.clock(), alerts)
        log.info("restored from %d requests, %d results and %d alerts: %d in flight, %d can escalate",
                 len(requests), len(results), len(alerts), len(self.policy.in_flight), len(self.policy.emitted))

    def end_offsets(self) -> dict[int, int]:
        """End offsets of the events topic, refreshed at most once a second.

        Asked through a client of their own: on the subscribed consumer each watermark query
        queues behind its long-poll fetch (``fetch.wait.max.ms``), 0.5 s apiece, which starved
        the loop (measured: 2 s per refresh, one message handled per refresh).
        """
        now = time.monotonic()
        if now - self._ends_at >= END_OFFSETS_EVERY_SECONDS:
            try:
                self._ends = dict(self._end_offsets()) if self._end_offsets is not None else self._query_end_offsets()
            except KafkaException as exc:  # a broker going away (bench chaos): keep the last ends, ask again
                if not is_transient(exc):
                    raise
                if self._ends_error is None:
                    log.warning("end offsets of %s unavailable (%s); using the last known", self.topics.events, exc)
                self._ends_error = exc
            else:
                if self._ends_error is not None:
                    log.info("end offsets of %s available again", self.topics.events)
                self._ends_error = None
            self._ends_at = now
        return self._ends

    def _query_end_offsets(self) -> dict[int, int]:
        topic = self.topics.events
        if self._offsets_client is None:
            self._offsets_client = Consumer(self.settings.confluent_config(
                **{"group.id": f"{self.settings.router_group}-offsets", "enable.auto.commit": False, **kafka_log_config(log)}))
        c = self._offsets_client
        if not self._event_partitions or time.monotonic() - self._partitions_at >= PARTITIONS_EVERY_SECONDS:
            self._event_partitions = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
            self._partitions_at = time.monotonic()
        return high_watermarks(c, topic, self._event_partitions)

    # --- messages ------------------------------------------------------------------------

    def handle(self, msg: Any) -> None:
        """One polled message into the policy; undecodable ones are logged and skipped."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        now = self.clock()
        try:
            if topic == self.topics.alerts:
                what = self.policy.on_alert(ALERT.decode(msg.value() or b""), now, source=(topic, partition, offset))
                log.debug("alert at %s[%d]@%d: %s", topic, partition, offset, what)
            elif topic == self.topics.retrain_results:
                res = RETRAIN_RESULT.decode(msg.value() or b"")
                escalated = self.policy.on_result(res, now)
                log.info("result %s: %s%s", res["request_id"], res["decision"],
                         f"; escalating to {escalated[0]['tier']}" if escalated else "")  # fmt: skip
                self.outbox.extend(escalated)
                while self.policy.errors:
                    log.error("%s", self.policy.errors.pop(0))
            elif topic == self.topics.stats:
                stat = STAT.decode(msg.value() or b"")
                self.policy.observe_slice(stat["model"], stat["slice"])
        except SchemaError as exc:
            self.skipped += 1
            log.warning("skipping undecodable message at %s[%d]@%d: %s", topic, partition, offset, exc)
        except (DriftError, KeyError, TypeError, ValueError):  # a bug or a record the policy cannot take
            self.skipped += 1
            log.exception("skipping message at %s[%d]@%d: the policy failed on it", topic, partition, offset)
        self.processed[(topic, partition)] = offset + 1

    def _flush_outbox(self) -> bool:
        """Produce the outbox and wait for the acks; False (outbox kept) if any failed."""
        if not self.outbox:
            return True
        problem = publish_and_wait(self.producer, [
            (self.topics.retrain_requests, request_key(req), RETRAIN_REQUEST.encode(req)) for req in self.outbox
        ], PUBLISH_TIMEOUT)  # fmt: skip
        if problem:
            log.error("requests not acknowledged (%s); keeping %d for retry", problem, len(self.outbox))
            return False
        for req in self.outbox:
            log.info("request %s: %s %s of %s for %s (priority %d, alerts %d)", req["request_id"], req["tier"],
                     req["modules"], req["model"], req["slices"], req["priority"], len(req["alert_ids"]))  # fmt: skip
            metrics.observe_retrain_request(req)
        self.produced += len(self.outbox)
        self.outbox = []
        return True

    def commit_offsets(self) -> list[TopicPartition]:
        """Per partition: the next offset to read, but not past an alert still waiting in a group."""
        hold: dict[TP, int] = {}
        for topic, partition, offset in self.policy.pending_sources():
            tp = (topic, partition)
            hold[tp] = min(hold.get(tp, offset), offset)
        out = []
        for tp, nxt in sorted(self.processed.items()):
            off = min(nxt, hold.get(tp, nxt))
            if off != self.committed.get(tp):
                out.append(TopicPartition(tp[0], tp[1], off))
        return out

    def _commit(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_commit < COMMIT_EVERY_SECONDS:
            return
        offsets = self.commit_offsets()
        self._last_commit = time.monotonic()
        if not offsets:
            return
        try:
            done = self.consumer.commit(offsets=offsets, asynchronous=False) or offsets
        except KafkaException as exc:  # nothing lost: the messages come again, request ids repeat
            log.warning("offset commit failed: %s", exc)
            return
        for tp in done:
            if getattr(tp, "error", None):
                log.warning("offset commit of %s[%d] failed: %s", tp.topic, tp.partition, tp.error)
            else:
                self.committed[(tp.topic, tp.partition)] = tp.offset

    # --- the loop ------------------------------------------------------------------------

    def step(self) -> None:
        msg = self.consumer.poll(POLL_SECONDS)
        if usable(msg, log):
            self.handle(msg)
        now = self.clock()
        for rid in self.policy.expire(now):
            log.warning("request %s got no result within %.0fs; its budget slot is free again", rid,
                        self.settings.router_in_flight_timeout_seconds)  # fmt: skip
        if self.policy.pending:
            self.outbox.extend(self.policy.due(now, self.end_offsets()))
            while self.policy.errors:
                log.error("%s; its alerts are dropped", self.policy.errors.pop(0))
        if self._flush_outbox():
            self._commit(force=False)

    def run(self, stop: threading.Event) -> None:
        log.info("router on %s, %s (group %s)", self.topics.alerts, self.topics.retrain_results, self.settings.router_group)
        try:
            run_until_stopped(stop, self.step)
            if self._flush_outbox():
                self._commit(force=True)
        finally:
            if self._consumer is not None:
                self._consumer.close()
            if self._offsets_client is not None:
                self._offsets_client.close()
            log.info("router closed: produced %d requests, skipped %d messages, %s", self.produced, self.skipped,
                     self.policy.counters)  # fmt: skip


def run(settings: Settings) -> None:
    serve("router", lambda stop: RouterService(settings).run(stop))
