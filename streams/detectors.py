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

import math
from collections import deque
from typing import Any, Callable, ClassVar, Hashable, Protocol

from river import drift
from functools import lru_cache

from scipy.special import chdtrc
from scipy.stats import binom, chi2

from schemas.errors import ConfigError, UnknownKeyError


class Detector(Protocol):
    key: ClassVar[str]

    def update(self, x: Any) -> bool: ...

    def clone(self) -> "Detector": ...

    @property
    def params(self) -> dict[str, str]: ...

    @property
    def window(self) -> int:
        """How many of the latest values make the post-change ("current") window."""


class AdwinDetector:
    """ADWIN (Bifet & Gavalda 2007): adaptive window, fires when two sub-windows' means differ.

    ADWIN's bound assumes values in [0, 1]; with ``calibrate`` > 0 the first ``calibrate``
    values only estimate a mean and scale, and later values are fed standardised, so the
    same ``delta`` means the same false-alarm rate whatever the feature's units.
    """

    key: ClassVar[str] = "adwin"

    def __init__(self, delta: float = 1e-5, clock: int = 32, grace_period: int = 10, calibrate: int = 100):
        if not 0 < delta < 1:
            raise ConfigError(f"adwin.delta must be in (0, 1), got {delta}")
        if calibrate < 0:
            raise ConfigError(f"adwin.calibrate must be >= 0, got {calibrate}")
        self.delta, self.clock, self.grace_period, self.calibrate = delta, clock, grace_period, calibrate
        self._adwin = drift.ADWIN(delta=delta, clock=clock, grace_period=grace_period)
        self._n, self._mean, self._m2 = 0, 0.0, 0.0
        self._scale = 1.0
        self.last_input = 0.0  # the signal ADWIN saw for the latest value, in input units

    def _signal(self, x: float) -> float | None:
        return x

    def update(self, x: float) -> bool:
        s = self._signal(x)
        if s is None:
            return False
        self.last_input = s
        if self._n < self.calibrate:
            self._n += 1
            d = s - self._mean
            self._mean += d / self._n
            self._m2 += d * (s - self._mean)
            if self._n == self.calibrate:
                sd = math.sqrt(self._m2 / (self._n - 1)) if self._n > 1 else 0.0
                self._scale = sd if sd > 1e-12 else (abs(self._mean) or 1.0)
            return False
        self._adwin.update((s - self._mean) / self._scale)
        return self._adwin.drift_detected

    def clone(self) -> "AdwinDetector":
        return type(self)(self.delta, self.clock, self.grace_period, self.calibrate)

    @property
    def params(self) -> dict[str, str]:
        return {
            "delta": repr(self.delta),
            "clock": str(self.clock),
            "grace_period": str(self.grace_period),
            "calibrate": str(self.calibrate),
        }

    @property
    def window(self) -> int:
        return int(self._adwin.width)

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """ADWIN's epsilon_cut for two sub-windows, back in input units."""
        if n_ref < 1 or n_cur < 1:
            return math.inf
        m = 1.0 / (1.0 / n_ref + 1.0 / n_cur)
        delta_prime = self.delta / math.log(n_ref + n_cur + 1)
        log_term = math.log(2.0 / delta_prime)
        z_var = variance / (self._scale**2)
        return (math.sqrt(2.0 * z_var * log_term / m) + 2.0 * log_term / (3.0 * m)) * self._scale


class AdwinVarianceDetector(AdwinDetector):
    """ADWIN on |x_t - x_{t-1}|: its mean scales with the spread whatever the mean, so a
    variance change shows and a mean shift (one large difference) does not."""

    key: ClassVar[str] = "adwin_variance"

    def __init__(self, delta: float = 1e-5, clock: int = 32, grace_period: int = 10, calibrate: int = 100):
        super().__init__(delta, clock, grace_period, calibrate)
        self._prev: float | None = None

    def _signal(self, x: float) -> float | None:
        prev, self._prev = self._prev, x
        return None if prev is None else abs(x - prev)


@lru_cache(maxsize=256)
def _chi2_critical(alpha: float, dof: int) -> float:
    return float(chi2.isf(alpha, dof))


class ChiSquareDetector:
    """Chi-square test of a sliding window of categories against a reference window.

    The reference is the first ``reference_size`` values; every ``check_every`` values the
    last ``window_size`` are tested. A change must be significant (p < ``alpha``) on
    ``persistence`` consecutive checks, so a short burst stays quiet.
    """

    key: ClassVar[str] = "chi_square"

    def __init__(
        self,
        alpha: float = 1e-6,
        reference_size: int = 500,
        window_size: int = 200,
        check_every: int = 25,
        persistence: int = 2,
    ):
        if not 0 < alpha < 1:
            raise ConfigError(f"chi_square.alpha must be in (0, 1), got {alpha}")
        self.alpha, self.reference_size, self.window_size = alpha, reference_size, window_size
        self.check_every, self.persistence = check_every, persistence
        self.reference: dict[Hashable, int] = {}
        self.n_ref = 0
        self.current: deque = deque(maxlen=window_size)
        self.counts: dict[Hashable, int] = {}
        self.n = 0
        self.streak = 0
        self.statistic = 0.0
        self.threshold = 0.0
        self.p_value = 1.0
        self.last_reference_mix: dict[Hashable, float] = {}
        self.last_current_mix: dict[Hashable, float] = {}
        self.last_n_ref = 0

    def update(self, x: Hashable) -> bool:
        self.n += 1
        if self.n_ref < self.reference_size:
            self.reference[x] = self.reference.get(x, 0) + 1
            self.n_ref += 1
            return False
        if len(self.current) == self.window_size:
            old = self.current[0]
            self.counts[old] -= 1
        self.current.append(x)
        self.counts[x] = self.counts.get(x, 0) + 1
        if len(self.current) < self.window_size or self.n % self.check_every:
            return False
        self.statistic, dof = self._chi_square()
        self.threshold = _chi2_critical(self.alpha, dof) if dof > 0 else math.inf
        self.p_value = float(chdtrc(dof, self.statistic)) if dof > 0 else 1.0
        self.streak = self.streak + 1 if self.statistic > self.threshold else 0
        if self.streak >= self.persistence:
            self._rebase()
            return True
        return False

    def _chi_square(self) -> tuple[float, int]:
        """Pearson's statistic with add-half smoothing, so unseen categories count too."""
        cats = set(self.reference) | {c for c, k in self.counts.items() if k}
        n_cur = len(self.current)
        total_ref = self.n_ref + 0.5 * len(cats)
        stat = 0.0
        for c in cats:
            expected = n_cur * (self.reference.get(c, 0) + 0.5) / total_ref
            stat += (self.counts.get(c, 0) - expected) ** 2 / expected
        return stat, len(cats) - 1

    def _rebase(self) -> None:
        """After a change the current window becomes the new reference (kept for the alert)."""
        self.last_reference_mix = self.proportions("reference")
        self.last_current_mix = self.proportions("current")
        self.last_n_ref = self.n_ref
        self.reference = {c: k for c, k in self.counts.items() if k}
        self.n_ref = len(self.current)
        self.current.clear()
        self.counts = {}
        self.streak = 0

    def proportions(self, which: str) -> dict[Hashable, float]:
        counts, n = (self.reference, self.n_ref) if which == "reference" else (self.counts, len(self.current))
        return {c: k / n for c, k in counts.items() if k} if n else {}

    def clone(self) -> "ChiSquareDetector":
        return ChiSquareDetector(self.alpha, self.reference_size, self.window_size, self.check_every, self.persistence)

    @property
    def params(self) -> dict[str, str]:
        return {
            "alpha": repr(self.alpha),
            "reference_size": str(self.reference_size),
            "window_size": str(self.window_size),
            "check_every": str(self.check_every),
            "persistence": str(self.persistence),
        }

    @property
    def window(self) -> int:
        return self.window_size


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

    def clone(self) -> "RateDetector":
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


DETECTORS: dict[str, Callable[..., Detector]] = {
    AdwinDetector.key: AdwinDetector,
    AdwinVarianceDetector.key: AdwinVarianceDetector,
    ChiSquareDetector.key: ChiSquareDetector,
    RateDetector.key: RateDetector,
}


def make_detector(key: str, params: dict[str, Any] | None = None) -> Detector:
    """Build the prototype detector for ``key``; unknown keys list the valid ones."""
    try:
        factory = DETECTORS[key]
    except KeyError:
        raise UnknownKeyError("detector", key, list(DETECTORS)) from None
    try:
        return factory(**(params or {}))
    except TypeError as exc:
        raise ConfigError(f"detector {key!r}: bad parameters {params}: {exc}") from exc
