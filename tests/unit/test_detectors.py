"""Detectors by config key, on fixed-seed streams with known change points."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.errors import ConfigError, UnknownKeyError
from streams.detectors import DETECTORS, make_detector

ONSET = 3000


def first_detection(detector, values) -> int | None:
    for i, x in enumerate(values):
        if detector.update(x):
            return i
    return None


def stream(kind: str, seed: int = 3) -> list:
    rng = np.random.default_rng(seed)
    if kind == "mean":
        xs = np.concatenate([rng.normal(20, 4, ONSET), rng.normal(28, 4, 1000)])
    elif kind == "scale":
        xs = np.concatenate([rng.normal(20, 4, ONSET), rng.normal(20, 10, 1000)])
    elif kind == "rare":
        xs = np.concatenate([rng.random(ONSET) < 0.01, rng.random(1000) < 0.2]).astype(float)
    elif kind == "rate":
        xs = np.concatenate([rng.random(ONSET) < 0.05, rng.random(1000) < 0.3]).astype(float)
    else:  # category mix
        return list(rng.choice(["a", "b", "c"], ONSET, p=[0.6, 0.3, 0.1])) + list(
            rng.choice(["a", "b", "c"], 1000, p=[0.2, 0.3, 0.5])
        )
    return [float(x) for x in xs]


CASES = [
    ("adwin", {}, "mean"),
    ("adwin", {"calibrate": 0}, "rate"),
    ("adwin_variance", {}, "scale"),
    ("chi_square", {}, "category"),
    ("rate", {}, "rare"),
]


@pytest.mark.parametrize("key, params, kind", CASES)
def test_detects_its_change_after_onset_and_not_before(key, params, kind):
    at = first_detection(make_detector(key, params), stream(kind))
    assert at is not None and ONSET <= at < ONSET + 300, at


def test_variance_detector_ignores_a_pure_mean_shift():
    assert first_detection(make_detector("adwin_variance"), stream("mean")) is None


def test_every_registered_detector_has_a_case():
    assert {key for key, _, _ in CASES} == set(DETECTORS)


@pytest.mark.parametrize("key, params, kind", CASES)
def test_clones_are_fresh_and_independent(key, params, kind):
    proto = make_detector(key, params)
    a, b = proto.clone(), proto.clone()
    first_detection(a, stream(kind))
    assert first_detection(b, stream(kind)[:ONSET]) is None
    assert a.params == b.params == proto.params


def test_unknown_key_lists_valid_ones():
    with pytest.raises(UnknownKeyError) as info:
        make_detector("adwinn")
    assert "valid: adwin, adwin_variance, chi_square, rate" in str(info.value)


def test_bad_params_name_the_detector():
    with pytest.raises(ConfigError, match="adwin"):
        make_detector("adwin", {"delta": 5})
    with pytest.raises(ConfigError, match="bad parameters"):
        make_detector("adwin", {"nope": 1})
