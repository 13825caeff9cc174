"""ADWIN on a numeric stream: on raw values (mean shifts) and on absolute successive
differences (variance changes: their mean tracks the spread whatever the mean, so a mean
shift does not look like a variance change). On 0/1 indicators it also watches rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import ClassVar

from schemas.errors import ConfigError
from streams.detectors.calibration import Calibrated
from streams.detectors.protocol import Detector
from streams.detectors.river_adapter import AdwinWindow


class AdwinDetector(Calibrated, Detector):
    """ADWIN (Bifet & Gavalda 2007): adaptive window, fires when two sub-windows' means differ.

    ADWIN's bound assumes values in [0, 1]; with ``calibrate`` > 0 the first ``calibrate``
    values only estimate a mean and scale, and later values are fed standardised, so the
    same ``delta`` means the same false-alarm rate whatever the feature's units. A heavy-tailed
    calibration sample also fixes a tail transform applied before standardising
    (:mod:`streams.detectors.calibration`).
    """

    key: ClassVar[str] = "adwin"

    def __init__(self, delta: float = 1e-5, clock: int = 32, grace_period: int = 10, calibrate: int = 100,
                 tails: str = "auto"):
        if not 0 < delta < 1:
            raise ConfigError(f"{self.key}.delta must be in (0, 1), got {delta}")
        self._init_calibration(self.key, calibrate, tails)
        self.delta, self.clock, self.grace_period = delta, clock, grace_period
        self._window = AdwinWindow(delta, clock, grace_period)

    def update(self, x: float) -> bool:
        if self._n < self.calibrate:
            return self._calibrate(x)
        self.last_input = x
        if self._spread:
            x = math.asinh((x - self._center) / self._spread)
        return self._window.update((x - self._mean) / self._scale)

    def scan(self, values: Sequence[float], start: int, signal: list[float] | None = None) -> int:
        n = len(values)
        while start < n and self._n < self.calibrate:
            self._calibrate(values[start])
            start += 1
        if start >= n:
            return n
        k = start + self._window.scan(self._standardised(values, start))
        self.last_input = values[min(k, n - 1)]
        return k

    def clone(self) -> AdwinDetector:
        return type(self)(self.delta, self.clock, self.grace_period, self.calibrate, self.tails)

    def rewind(self, reference: list[float]) -> None:
        """Start the window again from ``reference``. After a cut the window holds only the new
        regime; when the caller finds the change did not hold yet, this puts the old regime
        back, so a real change is cut (and tested) again instead of being absorbed."""
        if self._n < self.calibrate:
            return
        mean, scale, signal = self._mean, self._scale, self._signal
        self._window.load([(signal(v) - mean) / scale for v in reference])

    @property
    def params(self) -> dict[str, str]:
        return {
            "delta": repr(self.delta),
            "clock": str(self.clock),
            "grace_period": str(self.grace_period),
            "calibrate": str(self.calibrate),
            "tails": self._tails_param,
        }

    @property
    def window(self) -> int:
        return self._window.width

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
        self.last_input = d = abs(x - prev)
        return self._window.update((d - self._mean) / self._scale)

    def scan(self, values: Sequence[float], start: int, signal: list[float] | None = None) -> int:
        n = len(values)
        update = self.update
        while start < n and (self._n < self.calibrate or self._prev is None):
            fired = update(values[start])
            if signal is not None:
                signal.append(self.last_input)
            if fired:
                return start
            start += 1
        if start >= n:
            return n
        if self._spread:
            center, spread, asinh = self._center, self._spread, math.asinh
            shaped = [asinh((v - center) / spread) for v in values[start:]]
        else:
            shaped = values[start:] if isinstance(values, list) else list(values[start:])
        diffs = [abs(b - a) for a, b in pairwise([self._prev, *shaped])]
        mean, scale = self._mean, self._scale
        j = self._window.scan([(d - mean) / scale for d in diffs])
        last = min(j, len(diffs) - 1)
        self._prev, self.last_input = shaped[last], diffs[last]
        if signal is not None:
            signal.extend(diffs[: last + 1])
        return start + j

    @property
    def signal_start(self) -> int:
        return self.calibrate  # the calibration values' differences are in raw units

    def _signal(self, v: float) -> float:
        return v  # last_input is already the difference of shaped values

    def _fit(self, sample: list[float]) -> None:
        shaped = self._shaped(sample)
        self._set_standardisation([abs(b - a) for a, b in pairwise(shaped)])
        self._prev = shaped[-1]
