"""Two-sample chi-square test of a categorical stream's recent mix against a reference."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import ClassVar

from scipy.special import chdtrc
from scipy.stats import chi2

from schemas.errors import ConfigError
from streams.detectors.protocol import CategoricalDetection, CategoricalDetector

MIN_EXPECTED = 5.0  # chi-square: categories expected fewer times than this in the window are pooled


@lru_cache(maxsize=256)
def _chi2_critical(alpha: float, dof: int) -> float:
    return float(chi2.isf(alpha, dof))


class ChiSquareDetector(CategoricalDetector):
    """Two-sample chi-square test of recent categories against a reference, on two windows.

    Every ``check_every`` values the last ``window_size`` values (quick for large changes)
    and the last ``long_window`` values (enough evidence for small ones) are each tested
    against the reference with Pearson's 2 x k contingency statistic, at ``alpha`` split
    between the two (Bonferroni). A change must be significant on ``persistence``
    consecutive checks, so a short burst stays quiet. The reference is the first
    ``reference_size`` values, then keeps growing with the values leaving the long window
    (so the change being tested is not in it), halving its counts past ``max_reference``;
    after a detection the window that fired becomes the new reference.
    """

    key: ClassVar[str] = "chi_square"

    def __init__(
        self,
        alpha: float = 1e-6,
        reference_size: int = 500,
        window_size: int = 150,
        check_every: int = 10,
        persistence: int = 2,
        long_window: int = 600,
        max_reference: int = 10_000,
    ):
        if not 0 < alpha < 1:
            raise ConfigError(f"chi_square.alpha must be in (0, 1), got {alpha}")
        if window_size < 2 or reference_size < 2 or check_every < 1 or persistence < 1:
            raise ConfigError("chi_square: need window_size >= 2, reference_size >= 2, check_every >= 1, persistence >= 1")
        if long_window and long_window <= window_size:
            raise ConfigError(f"chi_square.long_window must be 0 (off) or > window_size, got {long_window}")
        self.alpha, self.reference_size, self.window_size = alpha, reference_size, window_size
        self.check_every, self.persistence = check_every, persistence
        self.long_window, self.max_reference = long_window, max_reference
        self.windows = (window_size, long_window) if long_window else (window_size,)
        self._alpha_each = alpha / len(self.windows)
        self.reference: dict[Hashable, int] = {}
        self.n_ref = 0
        size = self.windows[-1]
        self._ring: list[Hashable] = [None] * size
        self._filled = 0  # values in the ring (up to its size)
        self._head = 0  # where the next value goes once the ring is full
        self._counts: list[dict[Hashable, int]] = [{} for _ in self.windows]  # per window
        self.n = 0
        self.streak = 0
        self.fired_window = window_size
        self.statistic = 0.0
        self.critical = 0.0  # the chi-square critical value of the latest check
        self.p_value = 1.0
        self.last_reference_mix: dict[Hashable, float] = {}
        self.last_current_mix: dict[Hashable, float] = {}
        self.last_n_ref = 0
        self._previous: tuple[dict[Hashable, int], int] | None = None  # the reference before the latest rebase

    def update(self, x: Hashable) -> bool:
        self.n += 1
        if self.n_ref < self.reference_size and self._filled == 0:
            self.reference[x] = self.reference.get(x, 0) + 1
            self.n_ref += 1
            return False
        ring, size, f = self._ring, len(self._ring), self._filled
        i = f if f < size else self._head
        if f >= size:  # the slot being overwritten holds the value leaving the largest window
            old = ring[i]
            self._counts[-1][old] -= 1
            self.reference[old] = self.reference.get(old, 0) + 1  # ... which joins the reference
            self.n_ref += 1
        counts = self._counts[-1]
        counts[x] = counts.get(x, 0) + 1
        if len(self.windows) == 2:
            w = self.window_size
            short = self._counts[0]
            if f >= w:
                short[ring[i - w]] -= 1  # i - w < 0 wraps around, as the ring does
            short[x] = short.get(x, 0) + 1
        ring[i] = x
        self._head = i + 1 if i + 1 < size else 0
        self._filled = f + 1
        if self.n_ref > self.max_reference:
            self.reference = {c: k // 2 for c, k in self.reference.items() if k // 2}
            self.n_ref = sum(self.reference.values())
        if self._filled < self.window_size or self.n % self.check_every:
            return False
        return self._check()

    def _check(self) -> bool:
        """Test each full window against the reference; True when the change persisted."""
        best_margin, hit = -math.inf, None
        for j, w in enumerate(self.windows):
            if self._filled < w:
                break
            stat, dof = self._chi_square(self._counts[j], w)
            crit = _chi2_critical(self._alpha_each, dof) if dof > 0 else math.inf
            margin = stat / crit if dof > 0 else 0.0
            if margin > best_margin:
                best_margin = margin
                self.statistic, self.critical, hit = stat, crit, (j, dof)
        self.streak = self.streak + 1 if best_margin > 1.0 else 0
        if self.streak >= self.persistence:
            # only a detection reports it (a scalar scipy call costs 1 us, a tenth of a value's work)
            self.p_value = float(chdtrc(hit[1], self.statistic)) if hit[1] > 0 else 1.0
            self._rebase(hit[0])
            return True
        return False

    def _chi_square(self, counts: dict[Hashable, int], n_cur: int) -> tuple[float, int]:
        """Pearson's statistic of the 2 x k table (reference vs window), categories seen in either.

        Categories expected fewer than ``MIN_EXPECTED`` times in the window are pooled into one
        cell (Cochran's rule): with hundreds of rare levels (ids, zip codes) their tiny
        expected counts would make the statistic's chi-square law wrong and the stable stream
        alarm. A new or rare category that becomes common still shows, in the pooled cell or
        as a cell of its own.
        """
        n_ref = self.n_ref
        total = n_ref + n_cur
        stat, k = 0.0, 0
        rare_r = rare_w = 0
        min_pooled = MIN_EXPECTED * total / n_cur
        for c in set(self.reference) | {c for c, v in counts.items() if v}:
            r, w = self.reference.get(c, 0), counts.get(c, 0)
            if r + w < min_pooled:
                rare_r += r
                rare_w += w
                continue
            k += 1
            e_ref = n_ref * (r + w) / total
            e_cur = n_cur * (r + w) / total
            stat += (r - e_ref) ** 2 / e_ref + (w - e_cur) ** 2 / e_cur
        if rare_r + rare_w:
            k += 1
            e_ref = n_ref * (rare_r + rare_w) / total
            e_cur = n_cur * (rare_r + rare_w) / total
            stat += (rare_r - e_ref) ** 2 / e_ref + (rare_w - e_cur) ** 2 / e_cur
        return stat, k - 1

    def _rebase(self, j: int) -> None:
        """After a change the window that fired becomes the new reference (kept for the alert)."""
        w = self.windows[j]
        counts = self._counts[j]
        self.fired_window = w
        self.last_reference_mix = {c: k / self.n_ref for c, k in self.reference.items() if k} if self.n_ref else {}
        self.last_current_mix = {c: k / w for c, k in counts.items() if k}
        self.last_n_ref = self.n_ref
        self._previous = (self.reference, self.n_ref)
        self.reference = {c: k for c, k in counts.items() if k}
        self.n_ref = w
        self._ring = [None] * len(self._ring)
        self._filled = self._head = 0
        self._counts = [{} for _ in self.windows]
        self.streak = 0

    def restore_reference(self) -> None:
        """Undo the latest rebase: the change did not hold (a burst), so the old reference stands."""
        if self._previous is not None:
            self.reference, self.n_ref = self._previous
            self._previous = None

    def detection(self) -> CategoricalDetection:
        return CategoricalDetection(self.statistic, self.critical, self.p_value, self.last_reference_mix,
                                    self.last_current_mix, self.last_n_ref, self.fired_window)

    def scan(self, values: Sequence[Hashable], start: int, signal: list[float] | None = None) -> int:
        """:meth:`update` on ``values[start:]`` until a detection, the two-window bookkeeping in locals."""
        n, i, update = len(values), start, self.update
        while i < n and (len(self.windows) != 2 or (self.n_ref < self.reference_size and self._filled == 0)):
            if update(values[i]):  # a single window, or the reference still filling: the plain path
                return i
            i += 1
        if i >= n:
            return n
        ring, size, w, every = self._ring, len(self._ring), self.window_size, self.check_every
        short, long_ = self._counts
        ref, f, head, n_ref, count = self.reference, self._filled, self._head, self.n_ref, self.n
        while i < n:
            x = values[i]
            count += 1
            j = f if f < size else head
            if f >= size:  # the slot being overwritten holds the value leaving the largest window
                old = ring[j]
                long_[old] -= 1
                ref[old] = ref.get(old, 0) + 1  # ... which joins the reference
                n_ref += 1
            long_[x] = long_.get(x, 0) + 1
            if f >= w:
                short[ring[j - w]] -= 1  # j - w < 0 wraps around, as the ring does
            short[x] = short.get(x, 0) + 1
            ring[j] = x
            head = j + 1 if j + 1 < size else 0
            f += 1
            if n_ref > self.max_reference:
                ref = {c: k // 2 for c, k in ref.items() if k // 2}
                n_ref = sum(ref.values())
            if f >= w and not count % every:
                self.reference, self._filled, self._head, self.n_ref, self.n = ref, f, head, n_ref, count
                if self._check():
                    return i
            i += 1
        self.reference, self._filled, self._head, self.n_ref, self.n = ref, f, head, n_ref, count
        return n

    def clone(self) -> ChiSquareDetector:
        return ChiSquareDetector(
            self.alpha, self.reference_size, self.window_size, self.check_every, self.persistence,
            self.long_window, self.max_reference,
        )  # fmt: skip

    @property
    def params(self) -> dict[str, str]:
        return {
            "alpha": repr(self.alpha),
            "reference_size": str(self.reference_size),
            "window_size": str(self.window_size),
            "long_window": str(self.long_window),
            "check_every": str(self.check_every),
            "persistence": str(self.persistence),
        }

    @property
    def window(self) -> int:
        """The window of the latest detection."""
        return self.fired_window
