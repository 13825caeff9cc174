"""Checkpoints of rollouts in the registry, and the records a rollout publishes.

A rollout's state is checkpointed, not rebuilt: ``<registry>/<model>/rollouts/<request_id>.json``
(replaced atomically) holds the state machine, the next offset to score per events partition,
the CANDIDATE result it started from, and the records decided but not yet acknowledged (the
outbox). A restarted service loads every open checkpoint, publishes its outbox again (records
have deterministic ids, so a replay collapses) and reads the events on from its offsets; the
registry pointer then has the last word (:meth:`retrain_jobs.rollout.Rollout.reconcile`). A
finished rollout's file stays, ``closed``, as its history.

Models-topic semantics (ModelUpdate, key = model, ``update_id = model:version:stage``):
``version`` is the candidate (or the promoted / rolled-back version), ``previous_version`` the
incumbent it is compared with, ``current_version`` what the registry pointer names right after
this change, i.e. what serves every event outside the canary share:

========== ============================== ==================================================
stage      current_version                serving
========== ============================== ==================================================
CANDIDATE  incumbent                      incumbent everywhere
SHADOW     incumbent                      incumbent everywhere (candidate scored aside)
CANARY     incumbent                      candidate on ``serves_candidate(event_id, canary_fraction)``
                                          of ``slices``, incumbent elsewhere
PROMOTED   candidate (pointer swapped)    candidate everywhere (watched against the incumbent)
REJECTED   incumbent                      incumbent everywhere
ROLLED_BACK incumbent (pointer swapped    incumbent everywhere
           back if it had moved)
========== ============================== ==================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrain_jobs.registry import write_atomic
from retrain_jobs.rollout import Rollout, Transition
from schemas.codec import MODEL_UPDATE, RETRAIN_RESULT

MODELS, RESULTS = "models", "results"  # outbox entries: (which topic, record)


def update_id(model: str, version: str, stage: str) -> str:
    return f"{model}:{version}:{stage}"


def model_update(*, model: str, version: str, stage: str, current_version: str | None, now_ms: int,
                 previous_version: str | None = None, canary_fraction: float = 0.0, slices: list[str] | None = None,
                 decision: str | None = None, reason: str = "", request_id: str | None = None,
                 statistic: float | None = None, events: int = 0, candidate_loss: float | None = None,
                 incumbent_loss: float | None = None) -> dict[str, Any]:
    """A ModelUpdate record (see the module docstring for what its versions mean)."""
    return {
        "schema_version": MODEL_UPDATE.version,
        "update_id": update_id(model, version, stage),
        "model": model,
        "version": version,
        "previous_version": previous_version,
        "current_version": current_version,
        "stage": stage,
        "canary_fraction": float(canary_fraction),
        "slices": sorted(slices or []),
        "decision": decision,
        "reason": reason,
        "request_id": request_id,
        "statistic": statistic,
        "events": int(events),
        "candidate_loss": candidate_loss,
        "incumbent_loss": incumbent_loss,
        "updated_at": int(now_ms),
    }


def stage_update(r: Rollout, stage: str, current_version: str | None, now_ms: int, t: Transition | None = None,
                 reason: str = "") -> dict[str, Any]:
    """The ModelUpdate of ``r`` entering ``stage`` (by ``t`` when a test decided it)."""
    return model_update(
        model=r.model, version=r.candidate, stage=stage, current_version=current_version, now_ms=now_ms,
        previous_version=r.incumbent, canary_fraction=r.config.canary_fraction if stage == "CANARY" else 0.0,
        slices=r.slices, decision=t.decision if t else None, reason=t.reason if t else reason,
        request_id=r.request_id, statistic=t.statistic if t else None, events=t.events if t else 0,
        candidate_loss=t.candidate_loss if t else None, incumbent_loss=t.incumbent_loss if t else None,
    )  # fmt: skip


def final_result(candidate: Mapping[str, Any], t: Transition, now_ms: int) -> dict[str, Any]:
    """The rollout's RetrainResult for the same request as the CANDIDATE result it started from."""
    return {
        **candidate,
        "schema_version": RETRAIN_RESULT.version,
        "decision": t.decision,
        "cause": t.cause,
        "reason": t.reason,
        "checks": {**(candidate.get("checks") or {}), **{f"rollout_{k}": float(v) for k, v in t.checks.items()},
                   "rollout_statistic": t.statistic, "rollout_decision_events": float(t.events)},
        "finished_at": int(now_ms),
    }


@dataclass
class RolloutState:
    """A rollout with what the service needs to resume it."""

    rollout: Rollout
    cursors: dict[int, int]  # events partition -> next offset to score
    result: dict[str, Any]  # the CANDIDATE RetrainResult
    outbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    closed: bool = False  # finished and everything published
    since_checkpoint: int = 0  # paired events since the last checkpoint (not stored)

    @property
    def request_id(self) -> str:
        return self.rollout.request_id

    def to_json(self) -> str:
        return json.dumps({"rollout": self.rollout.to_dict(), "cursors": {str(p): o for p, o in self.cursors.items()},
                           "result": self.result, "outbox": [list(x) for x in self.outbox], "closed": self.closed},
                          sort_keys=True, default=float)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        d = json.loads(text)
        return cls(Rollout.from_dict(d["rollout"]), {int(p): int(o) for p, o in d["cursors"].items()}, d["result"],
                   [(topic, rec) for topic, rec in d["outbox"]], bool(d["closed"]))  # fmt: skip


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else f"%{ord(c):02x}" for c in name)


class RolloutStore:
    """Checkpoint files under the registry root (the registry is the source of truth)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, model: str, request_id: str) -> Path:
        return self.root / _safe(model) / "rollouts" / f"{_safe(request_id)}.json"

    def save(self, state: RolloutState) -> None:
        path = self.path(state.rollout.model, state.request_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, state.to_json().encode())
        state.since_checkpoint = 0

    def load(self, model: str, request_id: str) -> RolloutState | None:
        path = self.path(model, request_id)
        return RolloutState.from_json(path.read_text()) if path.exists() else None

    def all(self) -> list[RolloutState]:
        if not self.root.exists():
            return []
        return [RolloutState.from_json(p.read_text()) for p in sorted(self.root.glob("*/rollouts/*.json"))]

    def open(self) -> list[RolloutState]:
        """Rollouts not finished, or finished with records still to publish."""
        return [s for s in self.all() if not s.closed]
