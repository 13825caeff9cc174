"""Noise control for one channel: where a change happened, and whether it held.

A detection is a *candidate* until the next ``confirm_events`` values confirm it (same
direction, a share of the size), so blips stay quiet. Pure functions and the two candidate
records a channel keeps while it waits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from scipy.stats import rankdata

from streams.records import Finding

MIN_CURRENT = 20  # fewest values after an estimated change point
SPLIT_SEARCH = 512  # the change point is looked for among the latest this many values
LLR_SHARE = 0.4  # a spread mix change holds when the values since keep this share of KL(new || old)


@dataclass(slots=True)
class NumericCandidate:
    """A numeric detection waiting for confirmation: the split at the detection."""

    cut_seen: int  # the channel's value count when it fired
    ref_mean: float  # mean before the estimated change point
    cur_mean: float  # mean after it
    n_cur: int  # values after it


@dataclass(slots=True)
class CategoricalCandidate:
    """A categorical detection waiting for confirmation, with the finding it would alert."""

    cut_seen: int
    finding: Finding
    top: str  # the most moved category
    ref_share: float  # its reference share
    shift: float  # its move
    llr: dict[Hashable, float]  # log(p_new / p_old) per category (key None: unseen)
    kl: float  # KL(new || old): the mean of llr under the new mix


def change_point(vals: list[Any]) -> int:
    """Values in the current part (at least ``MIN_CURRENT``) of the most significant split.

    On ranks, so a few extreme values do not pull it to the last handful.
    """
    n = len(vals)
    ranks = rankdata(vals)
    total = float(ranks.sum())
    best, n_cur, tail = -1.0, MIN_CURRENT, float(ranks[n - MIN_CURRENT + 1:].sum())
    for k in range(MIN_CURRENT, min(n - MIN_CURRENT, SPLIT_SEARCH) + 1):  # k = values in the current part
        tail += ranks[n - k]
        score = abs(tail / k - (total - tail) / (n - k)) * math.sqrt(k * (n - k) / n)
        if score > best:
            best, n_cur = score, k
    return n_cur


def holds(post: list[Any], ref: float, shift: float, of: Callable[[Any], float], share: float = 0.25) -> bool:
    """The change held: the values since the cut, and their latest half alone, still show it
    (same direction, at least ``share`` of the size), so a burst that ended stays quiet.

    A quarter for numeric changes, not more: the shift estimated at the cut is the largest
    over all splits, so it overstates the change, and a rejected real change is not seen
    again (the detector has adapted to it). A burst over by the latest half leaves that half
    near zero. Categories ask for half: a rejected mix change is tested again (the reference
    is kept)."""
    if not post:
        return True
    for part in (post, post[len(post) // 2:]):
        moved = sum(of(v) for v in part) / len(part) - ref
        if moved * shift <= 0 or abs(moved) < share * abs(shift):
            return False
    return True


def log_likelihood_ratios(new: dict[Any, float], n_new: int, old: dict[Any, float], n_old: int) -> dict[Any, float]:
    """log(p_new(c) / p_old(c)) per category, both mixes smoothed by half a count per cell (key
    None: a category neither saw); a value's mean over draws of the old mix is about -KL < 0."""
    cats = set(new) | set(old)
    k = len(cats) + 1
    out = {c: math.log((new.get(c, 0.0) * n_new + 0.5) / (n_new + 0.5 * k))
           - math.log((old.get(c, 0.0) * n_old + 0.5) / (n_old + 0.5 * k)) for c in cats}
    out[None] = math.log(0.5 / (n_new + 0.5 * k)) - math.log(0.5 / (n_old + 0.5 * k))
    return out
