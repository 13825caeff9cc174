"""Detectors by config key, on fixed-seed streams with known change points."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.errors import ConfigError, UnknownKeyError
from streams.detectors import DETECTORS, make_detector


def first_detection(detector, values) -> int | None:
    for i, x in enumerate(values):
        if detector.update(float(x)):
            return i
    return None


@pytest.mark.parametrize("key", sorted(DETECTORS))
def test_detects_mean_shift_after_onset_and_not_before(key):
    rng = np.random.default_rng(3)
    stream = np.concatenate([rng.normal(0, 1, 3000), rng.normal(3, 1, 1000)])
    at = first_detection(make_detector(key), stream)
    assert at is not None and 3000 <= at < 3300, at


@pytest.mark.parametrize("key", sorted(DETECTORS))
def test_clones_are_fresh_and_independent(key):
    proto = make_detector(key)
    a, b = proto.clone(), proto.clone()
    for x in np.concatenate([np.zeros(500), np.full(500, 10.0)]):
        a.update(float(x))
    assert first_detection(b, np.zeros(200)) is None
    assert a.params == b.params == proto.params


def test_unknown_key_lists_valid_ones():
    with pytest.raises(UnknownKeyError) as info:
        make_detector("adwinn")
    assert "valid: adwin" in str(info.value)


def test_bad_params_name_the_detector():
    with pytest.raises(ConfigError, match="adwin"):
        make_detector("adwin", {"delta": 5})
    with pytest.raises(ConfigError, match="bad parameters"):
        make_detector("adwin", {"nope": 1})
