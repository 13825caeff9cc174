"""The rollout service (``python -m deploy.services rollout``): candidates judged on live events.

Reads CANDIDATE RetrainResults in one consumer group (``rollout_group``) and, for each, the
labelled events of its slices on the events topic that came after its training snapshot (from
the snapshot's end offsets; partitions the snapshot does not name from their end at the start).
Both versions from the registry score every such event (:mod:`retrain_jobs.rollout_scoring`); the
per-event log losses drive the pure :class:`retrain_jobs.rollout.Rollout`, and the service does
what it decides:

- SHADOW / CANARY: a ModelUpdate on the models topic (key = model).
- PROMOTED: registry pointer swap (compare-and-swap on the incumbent), then the ModelUpdate,
  then the final RetrainResult (same request_id) on the results topic. The watch goes on. A
  candidate whose incumbent was replaced meanwhile (two slices' rollouts of one model) is
  rebased onto the new current version when their modules are disjoint
  (:mod:`retrain_jobs.rebase`), else REJECTED as a stale parent.
- REJECTED / ROLLED_BACK: (when the watch rolls back: the pointer back to the incumbent, or,
  if another version was promoted on top, that version with the watched one's own modules set
  back) the ModelUpdate and the final RetrainResult with the cause, the reason and the test's
  numbers (``checks``).

Records go out after the registry change they announce, in a batch at the end of each poll:
checkpoint (state, offsets, outbox; :mod:`retrain_jobs.rollout_store`), publish and wait for the
acks, checkpoint again. On start it loads open checkpoints (publishing their outboxes again),
resumes them from their offsets, and republishes every registry pointer the models topic does
not show (also every ``rollout_reconcile_seconds``: bootstraps, promotions with the rollout off,
manual rollbacks), so topic and registry agree. A result record is committed only after its
rollout's checkpoint is written. Undecodable records are counted, logged and skipped (the
streams worker dead-letters bad events). One instance is enough (it only scores the affected
slices' labelled events); several would each resume every open rollout, harmlessly but twice.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from retrain_jobs.registry import Registry, RegistryError
from retrain_jobs.rollout import CAUSE_STALE_PARENT, CAUSE_WATCH_REGRESSED, Rollout, RolloutConfig, Transition
from retrain_jobs.rollout_registry import RegistrySide
from retrain_jobs.rollout_scoring import Scorer, VersionLosses, default_scorer, events_by_rollout
from retrain_jobs.rollout_store import (
    MODELS,
    RESULTS,
    RolloutState,
    RolloutStore,
    final_result,
    stage_update,
)
from runtime import metrics
from runtime.kafka import iter_topic, publish_and_wait, usable, value_decoder, watermarks
from runtime.kafka_logs import kafka_log_config
from runtime.service import serve
from schemas.codec import MODEL_UPDATE, RETRAIN_RESULT
from schemas.errors import InfraError, SchemaError
from schemas.events import EventLimits
from schemas.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
EVENTS_POLL_SECONDS = 0.2
EVENTS_BATCH = 1000
PUBLISH_TIMEOUT = 30.0

class RolloutService:
    """The loop; ``consumer`` (results, subscribed), ``events`` (events, assigned), ``producer``,
    ``registry``, ``scorer`` and ``clock`` default to the real ones; tests pass fakes."""

    def __init__(self, settings: Settings, consumer: Any = None, events: Any = None, producer: Any = None,
                 registry: Registry | None = None, scorer: Scorer | None = None,
                 clock: Callable[[], float] = time.time, restore: bool = True):  # fmt: skip
        self.settings = settings
        self._limits = EventLimits.from_settings(settings)  # what the streams worker dead-letters is skipped here too
        self.topics = settings.topics
        self.config = RolloutConfig.from_settings(settings)
        self.registry = registry or Registry(settings.registry_dir)
        self.store = RolloutStore(self.registry.root)
        self.side = RegistrySide(self.registry, clock, self._emit)
        self.sequence: list[tuple[str, dict]] = []  # this process's outbox records in the order they were decided
        self.losses = VersionLosses(self.registry, scorer or default_scorer)
        self.clock = clock
        self._consumer, self._events = consumer, events
        self.producer = producer if producer is not None else Producer(settings.producer_config(**kafka_log_config(log)))
        self.active: dict[str, RolloutState] = {}  # request_id -> state
        self.last_update: dict[str, dict] = {}  # model -> the latest ModelUpdate seen or published
        self.pending: list[tuple[str, dict]] = []  # records not tied to a rollout (republished pointers)
        self.position: dict[int, int] = {}  # events partition -> next offset the events consumer delivers
        self.skipped = 0
        self.published = 0
        self._reconciled_at = -math.inf
        if restore:
            self.restore()

    # --- Kafka edge ----------------------------------------------------------------------

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer(self.settings.confluent_config(**{
                "group.id": self.settings.rollout_group, "client.id": f"drift-rollout-{self.settings.worker_id}",
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "session.timeout.ms": int(self.settings.kafka_session_timeout_seconds * 1000),
                **kafka_log_config(log)}))  # fmt: skip
            self._consumer.subscribe([self.topics.retrain_results])
        return self._consumer

    @property
    def events(self) -> Any:
        if self._events is None:
            self._events = Consumer(self.settings.confluent_config(**{
                "group.id": f"{self.settings.rollout_group}-events", "enable.auto.commit": False,
                "enable.auto.offset.store": False, "auto.offset.reset": "earliest", **kafka_log_config(log)}))  # fmt: skip
        return self._events

    def _event_ends(self) -> dict[int, int]:
        topic = self.topics.events
        parts = self.events.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: hi for p, (_lo, hi) in watermarks(self.events, topic, sorted(parts)).items()}

    def _reassign(self) -> None:
        """Read the events from the lowest offset any active rollout still needs, per partition."""
        wanted: dict[int, int] = {}
        for st in self.active.values():
            if not st.rollout.done:
                for p, off in st.cursors.items():
                    wanted[p] = min(wanted.get(p, off), off)
        if not wanted:
            if self.position:
                self.events.unassign()
            self.position = {}
            return
        if all(self.position.get(p, math.inf) <= off for p, off in wanted.items()) and set(self.position) == set(wanted):
            return
        self.events.assign([TopicPartition(self.topics.events, p, off) for p, off in sorted(wanted.items())])
        self.position = dict(wanted)

    def publish(self, records: list[tuple[str, dict]]) -> None:
        """Produce and wait for the acks; InfraError when any was not delivered."""
        def encoded(kind: str, rec: dict) -> tuple[str, bytes, bytes]:
            topic, codec = (self.topics.models, MODEL_UPDATE) if kind == MODELS else (self.topics.retrain_results, RETRAIN_RESULT)
            return topic, rec["model"].encode(), codec.encode(rec)

        problem = publish_and_wait(self.producer, [encoded(kind, rec) for kind, rec in records], PUBLISH_TIMEOUT)
        if problem:
            raise InfraError(f"rollout records not delivered: {problem}")
        for kind, rec in records:
            if kind == MODELS:
                self.last_update[rec["model"]] = rec
                metrics.observe_model_update(rec)
                log.info("models: %s %s %s (current %s) %s", rec["model"], rec["version"], rec["stage"],
                         rec["current_version"], rec["reason"])  # fmt: skip
            else:
                log.info("result %s: %s (%s)", rec["request_id"], rec["decision"], rec["reason"])
        self.published += len(records)

    # --- start and recovery --------------------------------------------------------------

    def restore(self) -> None:
        def on_error(what: str) -> None:
            log.warning("models topic: skipping %s", what)

        with closing(iter_topic(self.settings, self.topics.models, decode=value_decoder(MODEL_UPDATE.decode),
                                until_end=True, on_error=on_error)) as records:  # fmt: skip
            for rec in records:
                self.last_update[rec["model"]] = rec
        for st in self.store.open():
            self.active[st.request_id] = st
            self._follow_registry(st)
            log.info("resuming rollout %s of %s %s (%s, %d events)", st.request_id, st.rollout.model,
                     st.rollout.candidate, st.rollout.phase, st.rollout.events)  # fmt: skip
        self.flush()
        self.reconcile()

    def _follow_registry(self, st: RolloutState) -> None:
        r = st.rollout
        current = self.registry.current_version(r.model)
        if r.phase in ("SHADOW", "CANARY") and current not in (r.incumbent, r.candidate) and current is not None:
            self.side.rebase(st, current)
        elif r.phase == "WATCH" and current not in (r.candidate, None) and self.side.follows(st, current):
            return  # promoted on top of the watched version, its slices predicted as before: watch on
        t = r.reconcile(self.registry.current_version(r.model))
        if t is not None:
            log.warning("rollout %s: %s", r.request_id, t.reason)
            self._records_for(st, t)

    def reconcile(self) -> None:
        """Rollouts follow the registry; the models topic shows every registry pointer."""
        self._reconciled_at = self.clock()
        for st in list(self.active.values()):
            self._follow_registry(st)
        busy = {st.rollout.model for st in self.active.values() if st.outbox}
        self.pending.extend((MODELS, rec) for rec in self.side.pointer_updates(self.last_update, busy))
        self.flush()

    # --- a candidate arrives --------------------------------------------------------------

    def begin(self, result: dict) -> RolloutState | None:
        """Start the rollout of a CANDIDATE result (once per request_id)."""
        model, rid, version = result["model"], result["request_id"], result.get("new_version")
        if rid in self.active or not version or self.store.load(model, rid) is not None:
            return None
        manifest = self.registry.manifest(model, version)
        incumbent = result.get("parent_version") or manifest.parent_version
        slices = list(result.get("slices") or (manifest.snapshot or {}).get("slice_filter") or [])
        cursors = self._event_ends()
        for rng in (manifest.snapshot or {}).get("ranges") or []:
            if (manifest.snapshot or {}).get("topic", self.topics.events) == self.topics.events:
                cursors[int(rng["partition"])] = int(rng["end_offset"])  # events after the training snapshot
        r = Rollout(self.config, model, version, incumbent, slices, rid)
        st = RolloutState(r, cursors, dict(result))
        now_ms = int(self.clock() * 1000)
        current = self.registry.current_version(model)
        self._emit(st, MODELS, stage_update(r, "CANDIDATE", current, now_ms, reason=result.get("reason") or ""))
        self._records_for(st, r.start())
        self._follow_registry(st)  # an incumbent no longer current: stale at once
        self.store.save(st)
        self.active[rid] = st
        self._reassign()
        return st

    # --- events ----------------------------------------------------------------------------

    def score(self, messages: Iterable[Any]) -> int:
        """Feed a batch of events messages to the rollouts that want them; paired events fed."""
        wanted, skipped = events_by_rollout(messages, self.active.values(), self.position, self._limits)
        self.skipped += skipped
        fed = 0
        for rid, evs in wanted.items():
            try:
                fed += self._feed(self.active[rid], evs)
            except Exception:  # a model that cannot score these events must not stop the other rollouts
                self.skipped += len(evs)
                log.exception("rollout %s: could not score %d events; skipped", rid, len(evs))
        return fed

    def _feed(self, st: RolloutState, events: list[dict]) -> int:
        r = st.rollout
        inc = self.losses(r.model, r.incumbent, events)
        cand = self.losses(r.model, r.candidate, events)
        n = 0
        for e, li, lc in zip(events, inc, cand, strict=True):
            if r.done:
                break
            t = r.observe(e["event_id"], float(li), float(lc))
            n += 1
            if t is not None:
                self._act(st, t)
        st.since_checkpoint += n
        metrics.ROLLOUT_EVENTS.labels(r.model).inc(n)
        return n

    def _act(self, st: RolloutState, t: Transition) -> None:
        """The registry side of a transition, then its records into the outbox."""
        r = st.rollout
        if t.decision == "PROMOTED":
            try:
                try:
                    self.registry.promote(r.model, r.candidate, expect_current=r.incumbent)
                except RegistryError:
                    current = self.registry.current_version(r.model)
                    if current is None or current == r.incumbent or not self.side.rebase(st, current):
                        raise
                    self.registry.promote(r.model, r.candidate, expect_current=r.incumbent)
                    t = dataclasses.replace(t, reason=f"{t.reason}; {r.history[-1]['reason']}")
            except RegistryError as exc:
                t = r.abort("REJECTED", CAUSE_STALE_PARENT, f"stale parent: {exc}")
        elif t.decision == "ROLLED_BACK" and t.cause == CAUSE_WATCH_REGRESSED:
            try:
                t = dataclasses.replace(t, reason=f"{t.reason}; {self.side.roll_back(st)}")
            except Exception:
                log.exception("rollout %s: rolling back failed; the pointer stays", r.request_id)
        self._records_for(st, t)

    def _records_for(self, st: RolloutState, t: Transition) -> None:
        r, now_ms = st.rollout, int(self.clock() * 1000)
        current = self.registry.current_version(r.model)
        if t.kind != "WATCH_PASSED":
            self._emit(st, MODELS, stage_update(r, t.stage, current, now_ms, t))
        else:
            log.info("rollout %s: %s", r.request_id, t.reason)
        if t.decision is not None:
            self._emit(st, RESULTS, final_result(st.result, t, now_ms))

    # --- checkpoint, publish ----------------------------------------------------------------

    def _emit(self, st: RolloutState, kind: str, record: dict) -> None:
        """A record into the rollout's (checkpointed) outbox, and into the publishing order: records
        of different rollouts go out in the order they were decided, so the models topic's last
        record of a model names the pointer as it is."""
        st.outbox.append((kind, record))
        self.sequence.append((kind, record))

    def flush(self, force: bool = False) -> bool:
        """Checkpoint what changed, publish every outbox, checkpoint again; False if publishing failed."""
        due = [st for st in self.active.values()
               if force or st.outbox or st.since_checkpoint >= self.settings.rollout_checkpoint_events]
        for st in due:
            self.store.save(st)
        ordered = {id(rec) for _kind, rec in self.sequence}
        restored = [x for st in self.active.values() for x in st.outbox if id(x[1]) not in ordered]
        records = restored + self.sequence + self.pending
        if records:
            try:
                self.publish(records)
            except (InfraError, KafkaException, BufferError) as exc:
                log.error("%s; keeping them for the next try", exc)
                return False
            self.pending, self.sequence = [], []
        for st in list(self.active.values()):
            if st.outbox or (st.rollout.done and not st.closed):
                st.outbox, st.closed = [], st.rollout.done
                self.store.save(st)
            if st.closed:
                del self.active[st.request_id]
                log.info("rollout %s of %s %s ended %s", st.request_id, st.rollout.model, st.rollout.candidate,
                         st.rollout.phase)  # fmt: skip
        self._reassign()
        metrics.ROLLOUTS_ACTIVE.set(len(self.active))
        return True

    # --- the loop --------------------------------------------------------------------------

    def handle_result(self, msg: Any) -> None:
        try:
            res = RETRAIN_RESULT.decode(msg.value() or b"")
        except SchemaError as exc:
            self.skipped += 1
            log.warning("skipping undecodable result at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            return
        if res["decision"] == "CANDIDATE" and self.settings.rollout_enabled:
            try:
                if self.begin(res) is not None:
                    log.info("rollout %s: %s %s against %s on %s", res["request_id"], res["model"],
                             res["new_version"], res["parent_version"], res["slices"])  # fmt: skip
            except RegistryError as exc:
                self.skipped += 1
                log.error("rollout %s: cannot start: %s", res["request_id"], exc)

    def _commit(self, msg: Any) -> None:
        """Commit past a handled result; a failure only means it comes again (and is skipped)."""
        try:
            self.consumer.commit(offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)],
                                 asynchronous=False)  # fmt: skip
        except KafkaException as exc:
            log.warning("offset commit failed: %s", exc)

    def step(self) -> None:
        msg = self.consumer.poll(0 if self.position else POLL_SECONDS)
        if usable(msg, log):
            self.handle_result(msg)
            if self.flush():  # the rollout's checkpoint and first records, then the commit
                self._commit(msg)
        if self.position:
            self.score(self.events.consume(EVENTS_BATCH, EVENTS_POLL_SECONDS))
        if self.flush() and self.clock() - self._reconciled_at >= self.settings.rollout_reconcile_seconds:
            self.reconcile()

    def run(self, stop: threading.Event) -> None:
        log.info("rollout service on %s and %s (group %s)", self.topics.retrain_results, self.topics.events,
                 self.settings.rollout_group)  # fmt: skip
        try:
            while not stop.is_set():
                self.step()
            self.flush(force=True)
        finally:
            for c in (self._consumer, self._events):
                if c is not None:
                    c.close()
            log.info("rollout service closed: %d active, %d records published, %d skipped", len(self.active),
                     self.published, self.skipped)  # fmt: skip


def run(settings: Settings) -> None:
    import torch

    torch.set_num_threads(settings.retrain_threads)
    serve("rollout", lambda stop: RolloutService(settings).run(stop))
