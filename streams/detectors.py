"""Drift detectors chosen by config key.

Each detector is a small river-style object: ``update(x)`` returns whether a change was
detected, and the rest is read-only state. No Kafka, clock or config reads inside. Per
(slice, feature) detectors are ``clone()``s of one prototype built from config.

ADWIN carries the numeric detectors: on raw values (mean shifts), on absolute successive
differences (variance changes: their mean tracks the spread whatever the mean, so a mean
shift does not look like a variance change), and on 0/1 indicators (missing values,
out-of-range values, prediction errors). Categorical mixes use a chi-square test between a
reference window and a sliding current window.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable, Hashable
from functools import lru_cache
from itertools import pairwise
from typing import Any, ClassVar, Protocol

from river import drift
from scipy.special import chdtrc
from scipy.stats import binom, chi2

from schemas.errors import ConfigError, UnknownKeyError


class Detector(Protocol):
    key: ClassVar[str]

    def update(self, x: Any) -> bool: ...

    def clone(self) -> Detector: ...

    @property
    def params(self) -> dict[str, str]: ...

    @property
    def window(self) -> int:
        """How many of the latest values make the post-change ("current") window."""


TAILS = ("auto", "raw")  # auto: shape heavy-tailed features (tail_shape); raw: never
HEAVY_SKEW = 1.0  # |sample skewness| of the calibration values above this: heavy-tailed ...
HEAVY_KURTOSIS = 2.0  # ... or sample excess kurtosis above this (a Gaussian's 100-value sd: 0.24 and 0.45)


def tail_shape(sample: list[float]) -> tuple[float, float]:
    """(center, spread) for :func:`math.asinh` ``((x - center) / spread)`` when ``sample`` looks
    heavy-tailed (skewed or with outliers: amounts, latencies, counts, mostly-zero values), else
    (0, 0): leave the values as they are.

    ADWIN's bound holds for bounded or light-tailed values. On a lognormal or a mostly-zero
    feature one extreme value moves a short sub-window's mean past it, and the stable stream
    alarms (measured: 4.6 false alarms per million such events). asinh is linear near the
    center and logarithmic in the tails, so a shift or a change of spread still shows while no
    single value dominates a window. Gaussian-like features keep their raw values: full power.
    """
    n = len(sample)
    if n < 8:
        return 0.0, 0.0
    mean = math.fsum(sample) / n
    m2 = math.fsum((v - mean) ** 2 for v in sample) / n
    if m2 <= 0.0:
        return 0.0, 0.0
    skew = math.fsum((v - mean) ** 3 for v in sample) / n / m2**1.5
    kurtosis = math.fsum((v - mean) ** 4 for v in sample) / n / m2**2 - 3.0
    if abs(skew) <= HEAVY_SKEW and kurtosis <= HEAVY_KURTOSIS:
        return 0.0, 0.0
    ordered = sorted(sample)
    center = ordered[n // 2]
    deviations = sorted(abs(v - center) for v in sample)
    spread = 1.4826 * deviations[n // 2]  # MAD; a mostly-constant sample falls back to the mean deviation
    return center, spread or (math.fsum(deviations) / n) or 1.0


class AdwinDetector:
    """ADWIN (Bifet & Gavalda 2007): adaptive window, fires when two sub-windows' means differ.

    ADWIN's bound assumes values in [0, 1]; with ``calibrate`` > 0 the first ``calibrate``
    values only estimate a mean and scale, and later values are fed standardised, so the
    same ``delta`` means the same false-alarm rate whatever the feature's units. A heavy-tailed
    calibration sample also fixes a :func:`tail_shape` transform applied before standardising.
    """

    key: ClassVar[str] = "adwin"
    # class defaults, so detector state pickled before these existed still loads (and stays raw)
    tails: str = "auto"
    _center: float = 0.0
    _spread: float = 0.0  # > 0: values are fed as asinh((x - _center) / _spread)
    _sample: list[float] | None = None

    def __init__(self, delta: float = 1e-5, clock: int = 32, grace_period: int = 10, calibrate: int = 100,
                 tails: str = "auto"):
        if not 0 < delta < 1:
            raise ConfigError(f"adwin.delta must be in (0, 1), got {delta}")
        if calibrate < 0:
            raise ConfigError(f"adwin.calibrate must be >= 0, got {calibrate}")
        if tails not in TAILS:
            raise ConfigError(f"{self.key}.tails must be one of {list(TAILS)}, got {tails!r}")
        self.delta, self.clock, self.grace_period, self.calibrate = delta, clock, grace_period, calibrate
        self.tails = tails
        self._adwin = self._new_window()
        self._n, self._mean = 0, 0.0
        self._scale = 1.0
        self.last_input = 0.0  # the signal ADWIN saw for the latest value, in input units

    def update(self, x: float) -> bool:
        if self._n >= self.calibrate:  # the hot path: river's ADWIN.update without the wrapper call
            a = self._adwin
            if a._drift_detected:
                a._reset()  # as river does: the window restarts after a detection
            self.last_input = x
            if self._spread:
                x = math.asinh((x - self._center) / self._spread)
            a._drift_detected = fired = a._helper.update((x - self._mean) / self._scale)
            return fired
        return self._calibrate(x)

    def _calibrate(self, x: float) -> bool:
        """The first ``calibrate`` values only fit the transform and the mean and scale."""
        self.last_input = x
        self._n += 1
        if self._sample is None:
            self._sample = []
        self._sample.append(x)
        if self._n == self.calibrate:
            self._fit(self._sample)
            self._sample = None
        return False

    def _shaped(self, sample: list[float]) -> list[float]:
        self._center, self._spread = tail_shape(sample) if self.tails == "auto" else (0.0, 0.0)
        if not self._spread:
            return sample
        return [math.asinh((v - self._center) / self._spread) for v in sample]

    def _fit(self, sample: list[float]) -> None:
        self._set_standardisation(self._shaped(sample))

    def _set_standardisation(self, signal: list[float]) -> None:
        n = len(signal)
        self._mean = math.fsum(signal) / n if n else 0.0
        sd = math.sqrt(math.fsum((v - self._mean) ** 2 for v in signal) / (n - 1)) if n > 1 else 0.0
        self._scale = sd if sd > 1e-12 else (abs(self._mean) or 1.0)

    def clone(self) -> AdwinDetector:
        return type(self)(self.delta, self.clock, self.grace_period, self.calibrate, self.tails)

    def rewind(self, reference: list[float]) -> None:
        """Start the window again from ``reference`` (values before a change point, in the units
        of ``last_input``). After a cut the window holds only the new regime; when the caller
        finds the change did not hold yet, this puts the old regime back, so a real change is
        cut (and tested) again instead of being absorbed."""
        if self._n < self.calibrate:
            return
        self._adwin = a = self._new_window()
        helper, mean, scale = a._helper, self._mean, self._scale
        for v in reference:
            helper.update((self._signal(v) - mean) / scale)
        a._drift_detected = False

    def _signal(self, v: float) -> float:
        return math.asinh((v - self._center) / self._spread) if self._spread else v

    def _new_window(self) -> Any:
        return drift.ADWIN(delta=self.delta, clock=self.clock, grace_period=self.grace_period)

    @property
    def params(self) -> dict[str, str]:
        return {
            "delta": repr(self.delta),
            "clock": str(self.clock),
            "grace_period": str(self.grace_period),
            "calibrate": str(self.calibrate),
            "tails": "asinh" if self._spread else self.tails,
        }

    @property
    def window(self) -> int:
        return int(self._adwin.width)

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """ADWIN's epsilon_cut for two sub-windows, back in input units (for a shaped feature,
        as seen near its center, where asinh is linear)."""
        if n_ref < 1 or n_cur < 1:
            return math.inf
        m = 1.0 / (1.0 / n_ref + 1.0 / n_cur)
        delta_prime = self.delta / math.log(n_ref + n_cur + 1)
        log_term = math.log(2.0 / delta_prime)
        unit = self._scale * (self._spread or 1.0)
        z_var = variance / unit**2
        return (math.sqrt(2.0 * z_var * log_term / m) + 2.0 * log_term / (3.0 * m)) * unit


class AdwinVarianceDetector(AdwinDetector):
    """ADWIN on |x_t - x_{t-1}|: its mean scales with the spread whatever the mean, so a
    variance change shows and a mean shift (one large difference) does not."""

    key: ClassVar[str] = "adwin_variance"
    derived_signal: ClassVar[bool] = True  # last_input is |x_t - x_{t-1}|, not x

    def __init__(self, delta: float = 1e-5, clock: int = 32, grace_period: int = 10, calibrate: int = 100,
                 tails: str = "auto"):
        super().__init__(delta, clock, grace_period, calibrate, tails)
        self._prev: float | None = None

    def update(self, x: float) -> bool:
        if self._n < self.calibrate:
            prev, self._prev = self._prev, x
            self._calibrate(x)
            self.last_input = 0.0 if prev is None else abs(x - prev)
            return False
        if self._spread:  # differences of the shaped values: a heavy tail does not make a jump
            x = math.asinh((x - self._center) / self._spread)
        prev, self._prev = self._prev, x
        if prev is None:  # calibrate=0: the first value has no predecessor
            return False
        a = self._adwin
        if a._drift_detected:
            a._reset()
        self.last_input = d = abs(x - prev)
        a._drift_detected = fired = a._helper.update((d - self._mean) / self._scale)
        return fired

    def _signal(self, v: float) -> float:
        return v  # last_input is already the difference of shaped values

    def _fit(self, sample: list[float]) -> None:
        shaped = self._shaped(sample)
        self._set_standardisation([abs(b - a) for a, b in pairwise(shaped)])
        self._prev = shaped[-1]


class PageHinkleyDetector(AdwinDetector):
    """river's Page-Hinkley test (two-sided CUSUM of deviations from the running mean) on
    values standardised like :class:`AdwinDetector`'s, so ``delta`` (the drift allowed,
    in reference sds) and ``threshold`` (lambda, in sds) mean the same in any units."""

    key: ClassVar[str] = "page_hinkley"

    def __init__(self, delta: float = 0.25, threshold: float = 40.0, min_instances: int = 30, calibrate: int = 100,
                 tails: str = "auto"):
        if not delta > 0 or not threshold > 0:
            raise ConfigError(f"page_hinkley: delta and threshold must be > 0, got {delta}, {threshold}")
        self.ph_delta, self.ph_threshold, self.min_instances = delta, threshold, min_instances
        super().__init__(calibrate=calibrate, tails=tails)  # builds the window: _new_window below
        self._run = self._run_at_detection = 0

    def update(self, x: float) -> bool:
        if self._n < self.calibrate:
            return self._calibrate(x)
        self.last_input = x
        if self._spread:
            x = math.asinh((x - self._center) / self._spread)
        self._run += 1
        self._adwin.update((x - self._mean) / self._scale)
        if self._adwin.drift_detected:
            self._run_at_detection, self._run = self._run, 0
            return True
        return False

    def _new_window(self) -> Any:
        return drift.PageHinkley(min_instances=self.min_instances, delta=self.ph_delta, threshold=self.ph_threshold,
                                 alpha=1.0)

    def clone(self) -> PageHinkleyDetector:
        return PageHinkleyDetector(self.ph_delta, self.ph_threshold, self.min_instances, self.calibrate, self.tails)

    def rewind(self, reference: list[float]) -> None:
        if self._n < self.calibrate:
            return
        self._adwin = ph = self._new_window()
        for v in reference:
            ph.update((self._signal(v) - self._mean) / self._scale)
        self._run = len(reference)

    @property
    def params(self) -> dict[str, str]:
        return {"delta": repr(self.ph_delta), "threshold": repr(self.ph_threshold),
                "min_instances": str(self.min_instances), "calibrate": str(self.calibrate),
                "tails": "asinh" if self._spread else self.tails}  # fmt: skip

    @property
    def window(self) -> int:
        return max(self._run_at_detection or self._run, 1)

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """lambda, back in input units (near the center, for a shaped feature)."""
        return self.ph_threshold * self._scale * (self._spread or 1.0)


MIN_EXPECTED = 5.0  # chi-square: categories expected fewer times than this in the window are pooled


@lru_cache(maxsize=256)
def _chi2_critical(alpha: float, dof: int) -> float:
    return float(chi2.isf(alpha, dof))


class ChiSquareDetector:
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
        self.threshold = 0.0
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
        best_margin, hit = -math.inf, None
        for j, w in enumerate(self.windows):
            if self._filled < w:
                break
            stat, dof = self._chi_square(self._counts[j], w)
            crit = _chi2_critical(self._alpha_each, dof) if dof > 0 else math.inf
            margin = stat / crit if dof > 0 else 0.0
            if margin > best_margin:
                best_margin = margin
                self.statistic, self.threshold, hit = stat, crit, (j, dof)
        self.p_value = float(chdtrc(hit[1], self.statistic)) if hit and hit[1] > 0 else 1.0
        self.streak = self.streak + 1 if best_margin > 1.0 else 0
        if self.streak >= self.persistence:
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

    def proportions(self, which: str) -> dict[Hashable, float]:
        if which == "reference":
            counts, n = self.reference, self.n_ref
        else:
            counts, n = self._counts[0], min(self._filled, self.window_size)
        return {c: k / n for c, k in counts.items() if k} if n else {}

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


class RateDetector:
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
        n, k, z = self._ref_n, self._ref_ones, 1.96
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        self.reference_rate = min(centre + half, 1.0)
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


class BernoulliCusumDetector:
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
    confirms: ClassVar[bool] = True  # the cumulative sum is its own persistence check

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
        n, k, z = self._ref_n, self._ref_k, self.z
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        p0 = min(centre + half, 0.99)
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


DETECTORS: dict[str, Callable[..., Detector]] = {
    AdwinDetector.key: AdwinDetector,
    AdwinVarianceDetector.key: AdwinVarianceDetector,
    PageHinkleyDetector.key: PageHinkleyDetector,
    ChiSquareDetector.key: ChiSquareDetector,
    RateDetector.key: RateDetector,
    BernoulliCusumDetector.key: BernoulliCusumDetector,
}


def detector_params(key: str) -> list[str]:
    """The parameter names detector ``key`` accepts."""
    factory = DETECTORS[key]
    return [p for p in inspect.signature(factory).parameters if p != "self"]


def _coerce(key: str, name: str, value: Any, default: Any) -> Any:
    """Numbers as the default's type: YAML reads ``1.0e8`` (no sign) as a string, and 200.0 may mean 200."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return value
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(default, int) and float(number).is_integer():
            return int(number)
        if isinstance(default, float) and not isinstance(number, bool):
            return float(number)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"detector {key!r}: parameter {name!r} must be a number ({type(default).__name__}), got {value!r}")


def make_detector(key: str, params: dict[str, Any] | None = None) -> Detector:
    """Build the prototype detector for ``key``; unknown keys and parameters list the valid ones."""
    try:
        factory = DETECTORS[key]
    except KeyError:
        raise UnknownKeyError("detector", key, list(DETECTORS)) from None
    params = dict(params or {})
    signature = inspect.signature(factory).parameters
    valid = detector_params(key)
    for name, value in params.items():
        if name not in valid:
            raise UnknownKeyError(f"parameter of detector {key!r}:", name, valid)
        params[name] = _coerce(key, name, value, signature[name].default)
    try:
        return factory(**params)
    except TypeError as exc:
        raise ConfigError(f"detector {key!r}: bad parameters {params}: {exc}") from exc
