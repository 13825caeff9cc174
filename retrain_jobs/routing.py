"""Which version serves an event during a canary: one pure function both sides import.

The rollout service (which scores the canary share and charges its regret) and a serving
handle (which routes live traffic) must agree event by event without talking to each other,
so the share is a deterministic hash of ``event_id``: sha256 of ``"canary:" + event_id``,
its first 8 bytes as a number in [0, 1), below ``fraction``. The salt keeps the canary share
independent of the train/validation/holdout split (:func:`retrain_jobs.selective.split_events`),
and a larger fraction serves a superset of a smaller one's events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

CANARY_SALT = "canary:"


def canary_unit(event_id: str) -> float:
    """The event's position in [0, 1) on the canary scale."""
    digest = hashlib.sha256((CANARY_SALT + event_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def serves_candidate(event_id: str, fraction: float) -> bool:
    """True when the canary candidate (not the current version) serves this event."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    return canary_unit(event_id) < fraction


def serving_version(update: Mapping[str, Any] | None, event_id: str, slice_: str) -> str | None:
    """The version that serves ``event_id`` of ``slice_`` under the latest ModelUpdate of its model.

    In CANARY the candidate (``update['version']``) serves its share of the update's slices;
    everything else is served by ``current_version`` (the registry pointer). None when there is
    no update (the caller falls back to the registry's current version).
    """
    if update is None:
        return None
    if (update.get("stage") == "CANARY" and slice_ in (update.get("slices") or ())
            and serves_candidate(event_id, float(update.get("canary_fraction") or 0.0))):
        return update["version"]
    return update.get("current_version")
