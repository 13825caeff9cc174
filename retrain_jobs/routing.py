"""Which events a canary candidate serves: one pure function the serving handle and the
rollout's evaluator share, so both agree event by event without talking to each other.

The share is chosen by a stable hash of ``event_id`` (BLAKE2b, 64 bits, as a fraction of
2**64): the same event goes to the same side in every process, on every replay and in
every Python version (the built-in ``hash`` of a str is salted per process). Raising the
fraction only adds events to the candidate's share: an event served by the candidate at
5% is served by it at 10% too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

_SCALE = float(2**64)


def canary_point(event_id: str) -> float:
    """The event's place in [0, 1): uniform over event ids, fixed for each id."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def serves_candidate(event_id: str, fraction: float) -> bool:
    """True when the canary candidate serves this event at this canary fraction."""
    return fraction > 0.0 and canary_point(event_id) < fraction


def routed_to_candidate(event_id: str, slice_: str, fraction: float, slices: Collection[str]) -> bool:
    """The canary decision of one event: only events of the candidate's ``slices`` (every
    slice when it names none) can go to the candidate, a ``fraction`` of them by hash."""
    return (not slices or slice_ in slices) and serves_candidate(event_id, fraction)
