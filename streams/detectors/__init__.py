"""Drift detectors chosen by config key.

| file | what |
|---|---|
| ``protocol.py`` | the :class:`Detector` protocol (everything a channel calls), the categorical variant, the Wilson bound |
| ``registry.py`` | config key -> class, :func:`make_detector` (unknown keys list the valid ones) |
| ``calibration.py`` | fitting a numeric stream's units: tail shape, mean and scale |
| ``river_adapter.py`` | the one place that reaches into river's private ADWIN parts |
| ``adwin.py`` | ADWIN on values (mean shifts) and on successive differences (variance changes) |
| ``page_hinkley.py`` | Page-Hinkley on standardised values |
| ``chi_square.py`` | chi-square test of a categorical mix against a reference |
| ``rate.py`` | rate detectors for 0/1 streams: windowed binomial test, Bernoulli CUSUM |
"""

from streams.detectors.adwin import AdwinDetector, AdwinVarianceDetector
from streams.detectors.calibration import tail_shape
from streams.detectors.chi_square import ChiSquareDetector
from streams.detectors.page_hinkley import PageHinkleyDetector
from streams.detectors.protocol import CategoricalDetection, CategoricalDetector, Detector, wilson_upper
from streams.detectors.rate import BernoulliCusumDetector, RateDetector
from streams.detectors.registry import DETECTORS, detector_params, make_detector

__all__ = [
    "DETECTORS",
    "AdwinDetector",
    "AdwinVarianceDetector",
    "BernoulliCusumDetector",
    "CategoricalDetection",
    "CategoricalDetector",
    "ChiSquareDetector",
    "Detector",
    "PageHinkleyDetector",
    "RateDetector",
    "detector_params",
    "make_detector",
    "tail_shape",
    "wilson_upper",
]
