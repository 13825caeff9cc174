"""Rate detectors for 0/1 streams (missing or out-of-range values, prediction errors): a
windowed binomial test and a Bernoulli CUSUM."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import ClassVar

from scipy.stats import binom

from schemas.errors import ConfigError
from streams.detectors.protocol import Detector, wilson_upper


class RateDetector(Detector):
    """Binomial test of the ones in a sliding window against a reference rate, for rare
    events (missing or out-of-range values) where ADWIN's bound reacts slowly from a zero
    base rate. The reference is the first ``reference_size`` values, taken at the upper
    end of its 95% Wilson interval so an unlucky reference does not cause alarms; the
    critical count is computed once per reference, so an update is O(1)."""

    key: ClassVar[str] = "rate"

    def __init__(self, alpha: float = 1e-7, reference_size: int = 500, window_size: int = 100):
        if not 0 < alpha < 1:
            raise ConfigError(f"rate.alpha must be in (0, 1), got {alpha}")
        self.alpha, self.reference_size, self.window_size = alpha, reference_size, window_size
        self._ref_n = self._ref_ones = 0
        self._window: deque = deque(maxlen=window_size)
        self._ones = 0
        self.critical = math.inf
        self.reference_rate = 0.0
        self.last_input = 0.0

    def update(self, x: float) -> bool:
        one = 1 if x else 0
        self.last_input = float(one)
        if self._ref_n < self.reference_size:
            self._ref_n += 1
            self._ref_ones += one
            if self._ref_n == self.reference_size:
                self._set_reference()
            return False
        if len(self._window) == self.window_size:
            self._ones -= self._window[0]
        self._window.append(one)
        self._ones += one
        if self._ones >= self.critical:
            self._ref_n = self._ref_ones = 0  # the new rate becomes the next reference
            self._window.clear()
            self._ones = 0
            return True
        return False

    def _set_reference(self) -> None:
        self.reference_rate = min(wilson_upper(self._ref_ones, self._ref_n, 1.96), 1.0)
        crit = binom.isf(self.alpha, self.window_size, self.reference_rate) + 1
        self.critical = crit if crit <= self.window_size else math.inf

    def clone(self) -> RateDetector:
        return RateDetector(self.alpha, self.reference_size, self.window_size)

    @property
    def params(self) -> dict[str, str]:
        return {"alpha": repr(self.alpha), "reference_size": str(self.reference_size), "window_size": str(self.window_size)}

    @property
    def window(self) -> int:
        return self.window_size

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """The rate increase the window's critical count stands for."""
        return max(self.critical / self.window_size - self.reference_rate, 0.0) if math.isfinite(self.critical) else 0.0


class BernoulliCusumDetector(Detector):
    """One-sided Bernoulli CUSUM (Page 1954; Reynolds & Stoumbos 1999) for a rising rate of
    ones: prediction errors, missing or out-of-range values.

    The statistic ``S = max(0, S + llr(x))`` sums the log-likelihood ratio of "rate p1"
    against "rate p0" and fires at ``h = ln(arl)``; by Wald's bound the in-control average
    run length is at least ``arl`` values while the true rate is at most p0, so ``arl`` sets
    the false-alarm rate directly (1e7: at most 0.1 per million values). Unlike a fixed
    window it accumulates evidence at the speed the change allows: a 5% rate against a
    near-zero reference fires after some 6 to 10 ones, a jump to 20% after a handful.

    p0 is the upper end of a ``z``-sigma Wilson interval of the reference rate, so an
    unlucky reference does not cause alarms. The reference is the first
    ``reference_size`` values, then keeps growing with values older than
    ``lag_blocks`` x ``block`` (so the change being detected does not leak into it),
    forgetting by halves past ``max_reference``. The design rate is
    ``p1 = min(max(ratio * p0, p0 + min_shift), p0 + max_shift)``: a doubling for rare ones,
    but at most ``max_shift`` more, since a model erring 30% of the time rarely doubles its
    error; the CUSUM designed for 0.3 -> 0.6 never fires on 0.3 -> 0.4 (its drift is negative),
    one designed for 0.3 -> 0.4 still catches 0.3 -> 0.6 about as fast. After a detection the new rate becomes
    the next reference. ``window`` is the number of values since S last left zero: the
    CUSUM's own change-point estimate.
    """

    key: ClassVar[str] = "bernoulli_cusum"
    self_confirming: ClassVar[bool] = True  # the cumulative sum is its own persistence check

    __slots__ = (
        "_bk",
        "_blocks",
        "_bn",
        "_down",
        "_ready",
        "_ref_k",
        "_ref_n",
        "_up",
        "arl",
        "block",
        "design_rate",
        "h",
        "lag_blocks",
        "max_reference",
        "max_shift",
        "min_shift",
        "ratio",
        "reference_rate",
        "reference_size",
        "run_at_detection",
        "s",
        "since_zero",
        "z",
    )  # fmt: skip

    def __init__(
        self,
        arl: float = 1e7,
        ratio: float = 2.0,
        min_shift: float = 0.03,
        reference_size: int = 500,
        block: int = 256,
        lag_blocks: int = 1,
        max_reference: int = 20_000,
        z: float = 2.0,
        max_shift: float | None = None,
    ):
        max_shift = max(0.1, min_shift) if max_shift is None else max_shift
        if not arl > 1:
            raise ConfigError(f"bernoulli_cusum.arl must be > 1, got {arl}")
        if not ratio > 1:
            raise ConfigError(f"bernoulli_cusum.ratio must be > 1, got {ratio}")
        if not 0 < min_shift < 1:
            raise ConfigError(f"bernoulli_cusum.min_shift must be in (0, 1), got {min_shift}")
        if not min_shift <= max_shift < 1:
            raise ConfigError(f"bernoulli_cusum.max_shift must be in [min_shift, 1), got {max_shift}")
        if reference_size < 1 or block < 1 or lag_blocks < 0 or max_reference < reference_size:
            raise ConfigError(
                "bernoulli_cusum: need reference_size >= 1, block >= 1, lag_blocks >= 0 and "
                f"max_reference >= reference_size; got {reference_size}, {block}, {lag_blocks}, {max_reference}"
            )
        self.arl, self.ratio, self.min_shift, self.max_shift, self.z = arl, ratio, min_shift, max_shift, z
        self.reference_size, self.block, self.lag_blocks, self.max_reference = (
            reference_size, block, lag_blocks, max_reference
        )  # fmt: skip
        self.h = math.log(arl)
        self.reference_rate = self.design_rate = 0.0  # kept past a detection, for its alert
        self.run_at_detection = 0
        self._reset()

    def _reset(self) -> None:
        self.s, self.since_zero = 0.0, 0
        self._up = self._down = 0.0
        self._ready = False
        self._ref_n = self._ref_k = self._bn = self._bk = 0
        self._blocks: list[tuple[int, int]] = []

    def update(self, x: float) -> bool:
        one = 1 if x else 0
        if not self._ready:
            self._ref_n += 1
            self._ref_k += one
            if self._ref_n >= self.reference_size:
                self._set_reference()
            return False
        self._bn += 1
        self._bk += one
        if self._bn >= self.block:
            self._rotate()
        s = self.s + (self._up if one else self._down)
        if s <= 0.0:
            self.s, self.since_zero = 0.0, 0
            return False
        self.s = s
        self.since_zero += 1
        if s >= self.h:
            self.run_at_detection = self.since_zero
            self._reset()  # the new rate becomes the next reference
            return True
        return False

    def scan(self, values: Sequence[float], start: int, signal: list[float] | None = None) -> int:
        """:meth:`update` on ``values[start:]`` until a detection, with the state in locals."""
        n, i = len(values), start
        while i < n and not self._ready:
            self.update(values[i])  # the reference phase never fires
            i += 1
        s, since, up, down, h = self.s, self.since_zero, self._up, self._down, self.h
        bn, bk, block = self._bn, self._bk, self.block
        while i < n:
            one = 1 if values[i] else 0
            bn += 1
            bk += one
            if bn >= block:
                self._bn, self._bk = bn, bk
                self._rotate()
                bn = bk = 0
                up, down = self._up, self._down
            s += up if one else down
            if s <= 0.0:
                s, since = 0.0, 0
            else:
                since += 1
                if s >= h:
                    self.run_at_detection = since
                    self._reset()
                    return i
            i += 1
        self.s, self.since_zero, self._bn, self._bk = s, since, bn, bk
        return n

    def _rotate(self) -> None:
        """A full block joins the lag queue; the block leaving it joins the reference."""
        self._blocks.append((self._bn, self._bk))
        self._bn = self._bk = 0
        if len(self._blocks) > self.lag_blocks:
            n, k = self._blocks.pop(0)
            self._ref_n += n
            self._ref_k += k
            if self._ref_n > self.max_reference:
                self._ref_n //= 2
                self._ref_k //= 2
            self._set_reference()

    def _set_reference(self) -> None:
        p0 = min(wilson_upper(self._ref_k, self._ref_n, self.z), 0.99)
        p1 = min(max(self.ratio * p0, p0 + self.min_shift), p0 + self.max_shift, 0.999)
        if p1 <= p0:  # the reference is already (nearly) all ones: nothing can rise
            self._up, self._down = 0.0, -1.0
        else:
            self._up, self._down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
        self.reference_rate, self.design_rate = p0, p1
        self._ready = True

    def clone(self) -> BernoulliCusumDetector:
        return BernoulliCusumDetector(
            self.arl, self.ratio, self.min_shift, self.reference_size, self.block, self.lag_blocks,
            self.max_reference, self.z, self.max_shift,
        )  # fmt: skip

    @property
    def params(self) -> dict[str, str]:
        return {
            "arl": repr(self.arl),
            "h": f"{self.h:.3f}",
            "ratio": repr(self.ratio),
            "min_shift": repr(self.min_shift),
            "max_shift": repr(self.max_shift),
            "reference_size": str(self.reference_size),
            "z": repr(self.z),
        }

    @property
    def detection_params(self) -> dict[str, str]:
        """The rates the latest detection tested (p0 from the reference, p1 designed)."""
        return {"reference_rate": f"{self.reference_rate:.5f}", "design_rate": f"{self.design_rate:.5f}"}

    @property
    def window(self) -> int:
        """Values since S last left zero, at the latest detection (or now, before any)."""
        return max(self.run_at_detection or self.since_zero, 1)

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """The rate increase the CUSUM is designed to catch (p1 - p0)."""
        return max(self.design_rate - self.reference_rate, 0.0)
