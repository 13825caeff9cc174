"""Fitting a numeric stream's units from its first values, for detectors whose bounds assume
standardised (or bounded) inputs: a tail transform for heavy-tailed features, then a mean
and a scale."""

from __future__ import annotations

import math

from schemas.errors import ConfigError

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


class Calibrated:
    """The first ``calibrate`` values only fit the transform (:func:`tail_shape`, unless
    ``tails`` is raw) and a mean and scale; later values are tested as
    ``(shape(x) - mean) / scale``, so one parameter means the same in any units."""

    def _init_calibration(self, key: str, calibrate: int, tails: str) -> None:
        if calibrate < 0:
            raise ConfigError(f"{key}.calibrate must be >= 0, got {calibrate}")
        if tails not in TAILS:
            raise ConfigError(f"{key}.tails must be one of {list(TAILS)}, got {tails!r}")
        self.calibrate, self.tails = calibrate, tails
        self._n, self._mean, self._scale = 0, 0.0, 1.0
        self._center = self._spread = 0.0  # _spread > 0: values are fed as asinh((x - _center) / _spread)
        self._sample: list[float] | None = None
        self.last_input = 0.0

    def _calibrate(self, x: float) -> bool:
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

    def _signal(self, v: float) -> float:
        """A value in ``last_input`` units, shaped as the detector tests it."""
        return math.asinh((v - self._center) / self._spread) if self._spread else v

    def _standardised(self, values: list[float], start: int) -> list[float]:
        """``values[start:]`` as the detector tests them (after calibration)."""
        mean, scale, spread = self._mean, self._scale, self._spread
        if spread:
            center, asinh = self._center, math.asinh
            return [(asinh((v - center) / spread) - mean) / scale for v in values[start:]]
        return [(v - mean) / scale for v in values[start:]]

    @property
    def _tails_param(self) -> str:
        return "asinh" if self._spread else self.tails
