"""Config key -> detector class, and building a prototype from a key and its parameters.

Adding a detector: implement :class:`streams.detectors.protocol.Detector` and add the class
to :data:`DETECTORS`; the model config and the settings then accept its key.
"""

from __future__ import annotations

import inspect
from typing import Any

from schemas.errors import ConfigError, UnknownKeyError
from streams.detectors.adwin import AdwinDetector, AdwinVarianceDetector
from streams.detectors.chi_square import ChiSquareDetector
from streams.detectors.page_hinkley import PageHinkleyDetector
from streams.detectors.protocol import Detector
from streams.detectors.rate import BernoulliCusumDetector, RateDetector

DETECTORS: dict[str, type[Detector]] = {
    cls.key: cls
    for cls in (AdwinDetector, AdwinVarianceDetector, PageHinkleyDetector, ChiSquareDetector, RateDetector,
                BernoulliCusumDetector)
}


def detector_params(key: str) -> list[str]:
    """The parameter names detector ``key`` accepts."""
    return [p for p in inspect.signature(DETECTORS[key]).parameters if p != "self"]


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
