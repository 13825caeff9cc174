"""Drift detectors chosen by config key.

Each detector is a small river-style object: ``update(x)`` returns whether a change was
detected, and the rest is read-only state. No Kafka, clock or config reads inside. Per
(slice, feature) detectors are ``clone()``s of one prototype built from config.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Protocol

from river import drift

from schemas.errors import ConfigError, UnknownKeyError


class Detector(Protocol):
    key: ClassVar[str]

    def update(self, x: float) -> bool: ...

    def clone(self) -> "Detector": ...

    @property
    def params(self) -> dict[str, str]: ...

    @property
    def window(self) -> int:
        """How many of the latest values make the post-change ("current") window."""

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """The decision threshold on |mean_cur - mean_ref| for these window sizes."""


class AdwinDetector:
    """ADWIN (Bifet & Gavalda 2007) on the raw values: adaptive window, mean shifts."""

    key: ClassVar[str] = "adwin"

    def __init__(self, delta: float = 1e-5, clock: int = 32, grace_period: int = 10):
        if not 0 < delta < 1:
            raise ConfigError(f"adwin.delta must be in (0, 1), got {delta}")
        self.delta, self.clock, self.grace_period = delta, clock, grace_period
        self._adwin = drift.ADWIN(delta=delta, clock=clock, grace_period=grace_period)

    def update(self, x: float) -> bool:
        self._adwin.update(x)
        return self._adwin.drift_detected

    def clone(self) -> "AdwinDetector":
        return AdwinDetector(self.delta, self.clock, self.grace_period)

    @property
    def params(self) -> dict[str, str]:
        return {"delta": repr(self.delta), "clock": str(self.clock), "grace_period": str(self.grace_period)}

    @property
    def window(self) -> int:
        return int(self._adwin.width)

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """ADWIN's epsilon_cut for two sub-windows (the bound its cut test uses)."""
        if n_ref < 1 or n_cur < 1:
            return math.inf
        m = 1.0 / (1.0 / n_ref + 1.0 / n_cur)
        delta_prime = self.delta / math.log(n_ref + n_cur + 1)
        log_term = math.log(2.0 / delta_prime)
        return math.sqrt(2.0 * variance * log_term / m) + 2.0 * log_term / (3.0 * m)


DETECTORS: dict[str, Callable[..., Detector]] = {
    AdwinDetector.key: AdwinDetector,
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
