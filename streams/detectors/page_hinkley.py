"""Page-Hinkley: a two-sided CUSUM of deviations from the running mean, for numeric streams."""

from __future__ import annotations

import math
from typing import ClassVar

from river import drift

from schemas.errors import ConfigError
from streams.detectors.calibration import Calibrated
from streams.detectors.protocol import Detector


class PageHinkleyDetector(Calibrated, Detector):
    """river's Page-Hinkley test (its public API) on values standardised like ADWIN's
    (:class:`streams.detectors.calibration.Calibrated`), so ``delta`` (the drift allowed, in
    reference sds) and ``threshold`` (lambda, in sds) mean the same in any units."""

    key: ClassVar[str] = "page_hinkley"

    def __init__(self, delta: float = 0.25, threshold: float = 40.0, min_instances: int = 30, calibrate: int = 100,
                 tails: str = "auto"):
        if not delta > 0 or not threshold > 0:
            raise ConfigError(f"page_hinkley: delta and threshold must be > 0, got {delta}, {threshold}")
        self._init_calibration(self.key, calibrate, tails)
        self.ph_delta, self.ph_threshold, self.min_instances = delta, threshold, min_instances
        self._test = self._new_test()
        self._run = self._run_at_detection = 0

    def _new_test(self) -> drift.PageHinkley:
        return drift.PageHinkley(min_instances=self.min_instances, delta=self.ph_delta, threshold=self.ph_threshold,
                                 alpha=1.0)

    def update(self, x: float) -> bool:
        if self._n < self.calibrate:
            return self._calibrate(x)
        self.last_input = x
        if self._spread:
            x = math.asinh((x - self._center) / self._spread)
        self._run += 1
        self._test.update((x - self._mean) / self._scale)
        if self._test.drift_detected:
            self._run_at_detection, self._run = self._run, 0
            return True
        return False

    def clone(self) -> PageHinkleyDetector:
        return PageHinkleyDetector(self.ph_delta, self.ph_threshold, self.min_instances, self.calibrate, self.tails)

    def rewind(self, reference: list[float]) -> None:
        if self._n < self.calibrate:
            return
        self._test = test = self._new_test()
        for v in reference:
            test.update((self._signal(v) - self._mean) / self._scale)
        self._run = len(reference)

    @property
    def params(self) -> dict[str, str]:
        return {"delta": repr(self.ph_delta), "threshold": repr(self.ph_threshold),
                "min_instances": str(self.min_instances), "calibrate": str(self.calibrate),
                "tails": self._tails_param}  # fmt: skip

    @property
    def window(self) -> int:
        return max(self._run_at_detection or self._run, 1)

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """lambda, back in input units (near the center, for a shaped feature)."""
        return self.ph_threshold * self._scale * (self._spread or 1.0)
