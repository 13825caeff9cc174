"""Live events for the rollouts: which rollout takes which event, and both versions' losses on it.

Kept apart from the rollout service's loop and registry side (:mod:`retrain_jobs.rollout_service`):
this part only reads. An event counts for a rollout when it comes at or after the rollout's cursor
on its partition (past its training snapshot), is labelled, and belongs to one of its slices; both
the incumbent and the candidate score it, and their per-event log losses are what
:class:`retrain_jobs.rollout.Rollout` tests.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from retrain_jobs.registry import Registry
from retrain_jobs.rollout_store import RolloutState
from runtime.kafka import usable
from schemas.errors import SchemaError
from schemas.events import EventLimits, decode_event

log = logging.getLogger(__name__)

Scorer = Callable[[Any, list[dict]], np.ndarray]  # (model object, events) -> P(label = 1) per event


def log_losses(p: np.ndarray, events: list[dict]) -> np.ndarray:
    """Per-event binary log loss (labels >= 0.5 count as 1, like the jobs' metrics)."""
    y = np.array([1.0 if float(e["label"]) >= 0.5 else 0.0 for e in events])
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def default_scorer(net: Any, events: list[dict]) -> np.ndarray:
    from retrain_jobs.selective import predict

    return predict(net, events)


class VersionLosses:
    """Per-event log losses of one model version, its network loaded from the registry once."""

    def __init__(self, registry: Registry, scorer: Scorer):
        self.registry = registry
        self.scorer = scorer
        self.nets: dict[tuple[str, str], Any] = {}

    def __call__(self, model: str, version: str, events: list[dict]) -> np.ndarray:
        if (model, version) not in self.nets:
            self.nets[(model, version)] = self.registry.load(model, version)[0]
        return log_losses(self.scorer(self.nets[(model, version)], events), events)


def events_by_rollout(messages: Iterable[Any], rollouts: Iterable[RolloutState], position: dict[int, int],
                      limits: EventLimits) -> tuple[dict[str, list[dict]], int]:  # fmt: skip
    """The labelled events of a batch of events messages per request_id of the rollouts that take
    them, and how many were undecodable (skipped).

    Advances ``position`` (the next offset the events consumer delivers, per partition) and the
    cursors of the running rollouts past every message they had not seen, of their slices or not,
    so a checkpoint resumes after it.
    """
    rollouts = list(rollouts)
    wanted: dict[str, list[dict]] = {}
    skipped = 0
    for msg in messages:
        if not usable(msg, log, "events consumer"):
            continue
        p, off = msg.partition(), msg.offset()
        position[p] = off + 1
        takers = [st for st in rollouts if not st.rollout.done and off >= st.cursors.get(p, math.inf)]
        for st in takers:
            st.cursors[p] = off + 1
        key = msg.key().decode("utf-8", "replace") if msg.key() else None
        takers = [st for st in takers if key is None or key in st.rollout.slices]
        if not takers:
            continue
        try:
            event = decode_event(msg.value(), limits)
        except SchemaError as exc:
            skipped += 1
            log.debug("events %d@%d skipped: %s", p, off, exc)
            continue
        if event.get("label") is None:
            continue
        for st in takers:
            if event["model"] == st.rollout.model and event["slice"] in st.rollout.slices:
                wanted.setdefault(st.request_id, []).append(event)
    return wanted, skipped
