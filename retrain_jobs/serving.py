"""Serve the current model from an application: a handle that follows releases on Kafka.

:class:`ModelHandle` loads the version the registry pointer names, then follows the
compacted models topic (``settings.topics.models``) in a background thread and swaps to the
version each ModelUpdate announces, without a restart. During a CANARY it sends the
candidate's share of the candidate's slices to the candidate, chosen by
:func:`retrain_jobs.routing.serves_candidate` on ``event_id``, the function the rollout's
evaluator uses too, so both agree on which events the candidate served.

``predict(event)`` returns ``(score, version)``; ``serve(event)`` also produces the
prediction event, with ``prediction`` and ``model_version`` set, to the events topic, so the
monitoring and the rollout see which version made each prediction.

Following the topic: by assignment (no consumer group: every application reads every
record; nothing is committed). At start it reads the topic up to its end and applies only
the latest record of the model (replaying every old stage would swap through old versions);
after that each new record applies as it comes. A version that cannot be loaded is logged
and the handle keeps serving what it had. Loaded versions are cached, so a rollback swaps
back instantly.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from torch import nn

from retrain_jobs.registry import Registry, RegistryError
from retrain_jobs.routing import serves_candidate
from retrain_jobs.selective import predict as predict_probabilities
from runtime import metrics
from runtime.kafka import usable, watermarks
from schemas.codec import EVENT, MODEL_UPDATE
from schemas.errors import DriftError, SchemaError
from schemas.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


class ServingError(DriftError):
    """The handle cannot serve (no version to load, closed, a produce that failed)."""


class Prediction(NamedTuple):
    score: float  # P(label = 1)
    version: str  # the version that made it


@dataclass(frozen=True)
class Plan:
    """What serves traffic after one ModelUpdate: pure data, no models loaded."""

    current: str | None  # None: keep what serves now (an update that names no pointer)
    candidate: str | None = None  # set only in CANARY with a share > 0
    fraction: float = 0.0
    slices: frozenset[str] = frozenset()
    stage: str | None = None
    update_id: str | None = None


def plan_for(update: Mapping[str, Any]) -> Plan:
    """The serving plan a ModelUpdate asks for.

    ``current_version`` is the registry pointer after the change (a PROMOTED record without
    it means its version is current). Only a CANARY with a positive share routes to a
    candidate; every other stage (SHADOW scores offline, REJECTED/ROLLED_BACK end the
    rollout) serves the current version alone.
    """
    stage = update["stage"]
    current = update.get("current_version") or (update["version"] if stage == "PROMOTED" else None)
    fraction = float(update.get("canary_fraction") or 0.0)
    canary = stage == "CANARY" and fraction > 0.0 and update["version"] != current
    return Plan(
        current=current,
        candidate=update["version"] if canary else None,
        fraction=fraction if canary else 0.0,
        slices=frozenset(update.get("slices") or ()) if canary else frozenset(),
        stage=stage,
        update_id=update.get("update_id"),
    )


@dataclass(frozen=True)
class _Serving:
    """The models serving now; replaced whole (one reference swap), never changed in place."""

    current: str
    current_net: nn.Module
    candidate: str | None = None
    candidate_net: nn.Module | None = None
    fraction: float = 0.0
    slices: frozenset[str] = frozenset()
    stage: str | None = None
    update_id: str | None = None

    def version_for(self, event: Mapping[str, Any]) -> str:
        if (self.candidate is not None and event.get("slice") in self.slices
                and serves_candidate(str(event.get("event_id", "")), self.fraction)):
            return self.candidate
        return self.current

    def net(self, version: str) -> nn.Module:
        return self.candidate_net if version == self.candidate and self.candidate_net is not None else self.current_net


@dataclass
class HandleStats:
    updates_seen: int = 0  # ModelUpdate records of this model read from the topic
    swaps: int = 0  # changes of what serves (current or candidate)
    load_failures: int = 0
    produced: int = 0
    produce_failures: int = 0
    last_error: str | None = None
    served: dict[str, int] = field(default_factory=dict)  # version -> predictions


class ModelHandle:
    """A model that follows its releases: ``predict`` / ``serve`` from any number of threads.

    ``follow=False`` serves the registry's current version and never reads Kafka (tests,
    batch scoring). ``registry`` defaults to ``Registry(settings.registry_dir)``. Use as a
    context manager, or call :meth:`close`: it stops the follower and flushes produced events.
    """

    def __init__(
        self,
        settings: Settings,
        model: str,
        *,
        registry: Registry | None = None,
        follow: bool = True,
        on_swap: Callable[[str, str | None], None] | None = None,
    ):
        self.settings = settings
        self.model = model
        self.registry = registry or Registry(settings.registry_dir)
        self.stats = HandleStats()
        self._on_swap = on_swap
        self._lock = threading.Lock()  # guards the cache, the stats and the swap itself
        self._cache: dict[str, nn.Module] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()  # the topic was read up to its end as of the start
        self._changed = threading.Condition(self._lock)
        self._producer: Producer | None = None
        self._closed = False
        version = self.registry.current_version(model)
        if version is None:
            raise ServingError(f"model {model!r} has no current version in {self.registry.root}; "
                               "train one with `driftctl train`")  # fmt: skip
        self._serving = _Serving(version, self._load(version))
        self._thread: threading.Thread | None = None
        if follow:
            self._thread = threading.Thread(target=self._follow, name=f"model-handle-{model}", daemon=True)
            self._thread.start()
        else:
            self._ready.set()

    # --- what serves -----------------------------------------------------------------------

    @property
    def current_version(self) -> str:
        return self._serving.current

    @property
    def candidate_version(self) -> str | None:
        return self._serving.candidate

    @property
    def canary_fraction(self) -> float:
        return self._serving.fraction

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once the models topic was read up to where it ended when the handle started."""
        return self._ready.wait(timeout)

    def wait_for(self, predicate: Callable[[ModelHandle], bool], timeout: float = 30.0) -> bool:
        """Block until ``predicate(self)`` holds after a swap (or already holds), up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    # --- predictions ---------------------------------------------------------------------

    def predict(self, event: Mapping[str, Any]) -> Prediction:
        """The score of one event and the version that made it (the candidate for its canary share)."""
        return self.predict_many([event])[0]

    def predict_many(self, events: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Scores of a batch, each with its version; one forward pass per version involved."""
        if self._closed:
            raise ServingError(f"the handle of {self.model!r} is closed")
        serving = self._serving  # one consistent view, whatever a swap does meanwhile
        versions = [serving.version_for(e) for e in events]
        scores = np.zeros(len(events))
        for version in set(versions):
            rows = [i for i, v in enumerate(versions) if v == version]
            try:
                scores[rows] = predict_probabilities(serving.net(version), [events[i] for i in rows])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SchemaError(f"{self.model}: cannot score these events with {version}: "
                                  f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
        with self._lock:
            for version in versions:
                self.stats.served[version] = self.stats.served.get(version, 0) + 1
        for version in set(versions):
            metrics.SERVING_PREDICTIONS.labels(self.model, version).inc(versions.count(version))
        return [Prediction(float(s), v) for s, v in zip(scores, versions)]

    def serve(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Score ``event`` and produce it to the events topic with ``prediction`` and
        ``model_version`` set (its label, if it has one, kept); returns the produced event."""
        return self.serve_many([event])[0]

    def serve_many(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        predictions = self.predict_many(events)
        out = []
        for event, p in zip(events, predictions):
            record = {**event, "model": event.get("model", self.model), "prediction": p.score, "model_version": p.version}
            value = EVENT.encode(record)  # a SchemaError names the bad field; nothing produced
            self._ensure_producer().produce(
                self.settings.topics.events, key=str(record["slice"]).encode(), value=value, on_delivery=self._delivered
            )
            out.append(record)
        self._producer.poll(0)
        return out

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for produced events to be delivered; returns how many are still pending."""
        return self._producer.flush(timeout) if self._producer is not None else 0

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = Producer(self.settings.producer_config(
                        **{"client.id": f"model-handle-{self.model}", "logger": log}))  # fmt: skip
        return self._producer

    def _delivered(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is None:
                self.stats.produced += 1
            else:
                self.stats.produce_failures += 1
                self.stats.last_error = f"produce to {msg.topic()}: {err}"
                log.error("prediction event not delivered: %s", err)

    # --- following the models topic ------------------------------------------------------

    def apply(self, update: Mapping[str, Any]) -> bool:
        """Serve what ``update`` announces (the follower calls this; tests may too).
        Returns whether what serves changed. A version that fails to load changes nothing."""
        if update.get("model") != self.model:
            return False
        plan = plan_for(update)
        current = plan.current or self._serving.current
        try:
            current_net = self._load(current)
            candidate_net = self._load(plan.candidate) if plan.candidate else None
        except (RegistryError, OSError, RuntimeError) as exc:
            with self._lock:
                self.stats.load_failures += 1
                self.stats.last_error = f"{update.get('update_id')}: {exc}"
            log.error("model %s: cannot load what %s announces; still serving %s: %s",
                      self.model, update.get("update_id"), self._serving.current, exc)  # fmt: skip
            return False
        new = _Serving(current, current_net, plan.candidate, candidate_net, plan.fraction, plan.slices,
                       plan.stage, plan.update_id)  # fmt: skip
        with self._changed:
            old = self._serving
            changed = (old.current, old.candidate, old.fraction, old.slices) != (
                new.current, new.candidate, new.fraction, new.slices)  # fmt: skip
            self._serving = new
            if changed:
                self.stats.swaps += 1
            self._changed.notify_all()
        if changed:
            log.info("model %s now serves %s%s (%s)", self.model, new.current,
                     f", candidate {new.candidate} on {new.fraction:.0%} of {sorted(new.slices)}"
                     if new.candidate else "", plan.update_id)  # fmt: skip
            if self._on_swap is not None:
                self._on_swap(new.current, new.candidate)
        return changed

    def _load(self, version: str) -> nn.Module:
        with self._lock:
            net = self._cache.get(version)
        if net is None:
            net, _ = self.registry.load(self.model, version)
            with self._lock:
                net = self._cache.setdefault(version, net)
        return net

    def _follow(self) -> None:
        topic = self.settings.topics.models
        consumer = Consumer(self.settings.confluent_config(**{
            "group.id": f"model-handle-{uuid.uuid4().hex[:12]}",  # never joined nor committed: assign only
            "enable.auto.commit": False, "enable.partition.eof": False, "logger": log,
        }))  # fmt: skip
        try:
            parts = self._partitions(consumer, topic)
            if parts is None:
                return
            ends = {p: high for p, (low, high) in watermarks(consumer, topic, parts).items() if high > low}
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            latest: dict[str, Any] | None = None
            if not ends:
                self._ready.set()
            while not self._stop.is_set():
                msg = consumer.poll(POLL_SECONDS)
                if not usable(msg, log, "models topic"):
                    continue
                update = self._decode(msg)
                if update is not None and update["model"] == self.model:
                    with self._lock:
                        self.stats.updates_seen += 1
                    if self._ready.is_set():
                        self.apply(update)
                    else:
                        latest = update
                p = msg.partition()
                if not self._ready.is_set() and p in ends and msg.offset() >= ends[p] - 1:
                    del ends[p]
                    if not ends:  # caught up: only the latest record of the model counts
                        if latest is not None:
                            self.apply(latest)
                        self._ready.set()
        except Exception as exc:  # the follower must not die silently
            with self._lock:
                self.stats.last_error = f"follower stopped: {type(exc).__name__}: {exc}"
            log.exception("model %s: the models-topic follower stopped; serving %s from now on",
                          self.model, self._serving.current)  # fmt: skip
        finally:
            self._ready.set()
            consumer.close()

    def _partitions(self, consumer: Consumer, topic: str) -> list[int] | None:
        while not self._stop.is_set():
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                return sorted(meta.partitions)
            log.warning("models topic %s not there yet (%s); run driftctl up", topic, meta.error if meta else "none")
            self._stop.wait(2.0)
        return None

    def _decode(self, msg: Any) -> dict[str, Any] | None:
        if msg.value() is None:  # a tombstone: the model was deleted from the topic; keep serving
            return None
        try:
            return MODEL_UPDATE.decode(msg.value())
        except SchemaError as exc:
            log.warning("models topic %s[%d]@%d: skipped: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            return None

    # --- closing ---------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Stop following, deliver what was produced; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._producer is not None:
            left = self._producer.flush(timeout)
            if left:
                log.error("model handle %s closed with %d prediction events undelivered", self.model, left)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
