"""Detectors by config key, on fixed-seed streams with known change points."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.errors import ConfigError, UnknownKeyError
from streams.detectors import DETECTORS, make_detector, tail_shape

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
    ("adwin_variance", {"calibrate": 0, "tails": "raw"}, "scale"),
    ("chi_square", {}, "category"),
    ("rate", {}, "rare"),
    ("bernoulli_cusum", {}, "rare"),
    ("page_hinkley", {}, "mean"),
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
    assert "valid: adwin, adwin_variance, bernoulli_cusum, chi_square, page_hinkley, rate" in str(info.value)


def test_bad_params_name_the_detector():
    with pytest.raises(ConfigError, match="adwin"):
        make_detector("adwin", {"delta": 5})
    with pytest.raises(UnknownKeyError, match="'nope'; valid: calibrate, clock, delta, grace_period"):
        make_detector("adwin", {"nope": 1})
    with pytest.raises(ConfigError, match="bernoulli_cusum.arl"):
        make_detector("bernoulli_cusum", {"arl": 0.5})


def _bits(rates_and_lengths, seed: int = 5) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for p, n in rates_and_lengths for x in rng.random(n) < p]


@pytest.mark.parametrize(
    "params, before, after, median_under",
    [
        ({}, (0.0, 2000), (0.05, 2000), 250),  # 5% out of range where there were none
        ({"arl": 1e6}, (0.08, 2500), (0.24, 1500), 250),  # the error rate tripled
        ({"arl": 1e6}, (0.30, 2500), (0.45, 1500), 450),  # a hard model: 30% -> 45% (never fired uncapped)
    ],
)
def test_cusum_detects_rate_increases_soon(params, before, after, median_under):
    delays = []
    for seed in range(9):
        at = first_detection(make_detector("bernoulli_cusum", params), _bits([before, after], seed))
        assert at is not None and at >= before[1], (seed, at)
        delays.append(at - before[1])
    assert sorted(delays)[4] < median_under, delays


def test_cusum_design_rate_is_capped_for_high_base_rates():
    det = make_detector("bernoulli_cusum")
    for x in _bits([(0.3, 600)]):
        det.update(x)
    assert det.design_rate - det.reference_rate == pytest.approx(0.1)  # not 2 x 0.3
    with pytest.raises(ConfigError, match="max_shift"):
        make_detector("bernoulli_cusum", {"min_shift": 0.05, "max_shift": 0.01})
    assert make_detector("bernoulli_cusum", {"min_shift": 0.2}).max_shift == 0.2  # configs from before the cap


def test_cusum_stays_quiet_on_stable_rates():
    """Wald: the in-control run length is at least arl; 1.2M stable values over many rates."""
    fires = 0
    for i, p in enumerate((0.0, 0.001, 0.01, 0.05, 0.1, 0.3)):
        for rep in range(4):
            det = make_detector("bernoulli_cusum", {"arl": 1e6})
            fires += sum(det.update(x) for x in _bits([(p, 50_000)], seed=100 * i + rep))
    assert fires == 0


def test_cusum_reference_follows_the_stable_rate_but_not_the_change():
    det = make_detector("bernoulli_cusum")
    for x in _bits([(0.02, 6000)]):
        det.update(x)
    settled = det.reference_rate
    assert 0.02 < settled < 0.03  # the upper Wilson bound of a reference that grew past 500
    fired_at = first_detection(det, _bits([(0.2, 400)], seed=9))
    assert fired_at is not None and fired_at < 150
    assert float(det.detection_params["reference_rate"]) < 0.03  # the lagged reference did not absorb the 20%
    assert det.window > 0  # the run since the statistic left zero: the change-point estimate


def test_page_hinkley_stays_quiet_on_a_stable_stream():
    rng = np.random.default_rng(1)
    det = make_detector("page_hinkley")
    assert not any(det.update(float(x)) for x in rng.normal(20, 4, 100_000))


def _mix(p, n, rng):
    return rng.choice(len(p), n, p=np.array(p) / sum(p)).tolist()


def test_chi_square_is_quiet_on_stable_mixes_with_rare_categories():
    """The two-sample test counts the reference's own noise: a 1% category or a 90/10 split
    does not look like drift (a one-sample test against the reference fired here)."""
    rng = np.random.default_rng(3)
    fires = 0
    for p in ([0.5, 0.35, 0.15], [0.9, 0.1], [0.3, 0.3, 0.3, 0.05, 0.05], [0.11] * 9 + [0.01]):
        for _ in range(5):
            det = make_detector("chi_square")
            fires += sum(det.update(x) for x in _mix(p, 20_000, rng))
    assert fires == 0


@pytest.mark.parametrize("odds, median_under", [(3.0, 250), (2.0, 700)])
def test_chi_square_long_window_catches_small_mix_changes(odds, median_under):
    rng = np.random.default_rng(8)
    p = [0.5, 0.35, 0.15]
    rare = 0.15 * odds / (0.15 * odds + 0.85)
    q = [0.5 * (1 - rare) / 0.85, 0.35 * (1 - rare) / 0.85, rare]
    delays = []
    for _ in range(9):
        at = first_detection(make_detector("chi_square"), _mix(p, 3000, rng) + _mix(q, 3000, rng))
        assert at is not None and at >= 3000
        delays.append(at - 3000)
    assert sorted(delays)[4] < median_under, delays


def test_chi_square_pools_rare_levels_so_high_cardinality_stays_quiet():
    """500 Zipf-distributed levels (most expected < 1 per window): 30 fires in these 200,000
    values before rare levels were pooled; ids that never repeat have nothing to test."""
    rng = np.random.default_rng(6)
    p = 1 / np.arange(1, 501) ** 1.1
    fires = 0
    for _ in range(10):
        det = make_detector("chi_square")
        fires += sum(det.update(x) for x in _mix(list(p), 20_000, rng))
    ids = make_detector("chi_square")
    fires += sum(ids.update(f"id-{i}") for i in range(20_000))
    assert fires == 0


def test_chi_square_catches_a_new_level_among_many_rare_ones():
    rng = np.random.default_rng(7)
    p = list(1 / np.arange(1, 501) ** 1.1)
    before = _mix(p, 3000, rng)
    after = [x if rng.random() > 0.2 else "new" for x in _mix(p, 3000, rng)]
    at = first_detection(make_detector("chi_square"), before + after)
    assert at is not None and 3000 <= at < 3300


def test_chi_square_ignores_a_short_burst():
    rng = np.random.default_rng(2)
    burst = _mix([0.5, 0.35, 0.15], 3000, rng) + [2] * 12 + _mix([0.5, 0.35, 0.15], 3000, rng)
    assert first_detection(make_detector("chi_square"), burst) is None


HEAVY = {
    "lognormal": lambda rng, n: rng.lognormal(3, 1.5, n),
    "pareto": lambda rng, n: rng.pareto(2.0, n),
}


def test_tail_shape_leaves_gaussian_features_raw_and_shapes_heavy_tails():
    rng = np.random.default_rng(2)
    assert sum(tail_shape(list(rng.normal(50, 5, 100)))[1] > 0 for _ in range(500)) <= 5
    assert tail_shape(list(rng.uniform(0, 1, 100))) == (0.0, 0.0)
    for gen in HEAVY.values():
        assert tail_shape(list(gen(rng, 100)))[1] > 0
    center, spread = tail_shape([0.0] * 95 + [500.0] * 5)  # mostly zero: the MAD is 0
    assert center == 0.0 and spread > 0
    assert tail_shape([3.0] * 100) == (0.0, 0.0)


def fires(key: str, tails: str, gen, streams: int = 40, n: int = 4000, seed: int = 4) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    for _ in range(streams):
        det = make_detector(key, {"tails": tails})
        total += sum(det.update(float(x)) for x in gen(rng, n))
    return total


@pytest.mark.parametrize("key", ["adwin", "adwin_variance"])
@pytest.mark.parametrize("dist", sorted(HEAVY))
def test_heavy_tailed_stable_streams_stay_quiet(key, dist):
    """One extreme value used to move a short ADWIN sub-window past its bound."""
    raw, auto = fires(key, "raw", HEAVY[dist]), fires(key, "auto", HEAVY[dist])
    assert raw > 0, "the raw detector alarms on this stream (so the test can fail)"
    assert auto == 0


def test_a_shift_of_a_heavy_tailed_feature_is_still_detected_soon():
    rng = np.random.default_rng(8)
    delays = []
    for _ in range(20):
        det = make_detector("adwin")
        values = np.concatenate([rng.lognormal(3, 1, ONSET), 2 * rng.lognormal(3, 1, 1000)])
        delays.append(first_detection(det, [float(x) for x in values]) - ONSET)
    assert det.params["tails"] == "asinh"
    assert min(delays) >= 0 and np.median(delays) < 200


def test_bad_tails_option_lists_the_choices():
    with pytest.raises(ConfigError, match=r"adwin_variance.tails must be one of \['auto', 'raw'\]"):
        make_detector("adwin_variance", {"tails": "log"})


def test_a_rewound_adwin_cuts_a_real_change_again():
    """A candidate that did not hold yet puts the old regime back: the change is cut again."""
    rng = np.random.default_rng(3)
    before, after = rng.normal(0, 1, 1500), rng.normal(0, 3, 1500)
    det = make_detector("adwin_variance")
    cut = next(i for i, x in enumerate(np.concatenate([before, after])) if det.update(float(x)))
    det.rewind([abs(b - a) for a, b in zip(before[-500:], before[-499:])])
    again = first_detection(det, [float(x) for x in after[cut - 1500 + 1:]])
    assert again is not None and again < 200


@pytest.mark.parametrize("key, params, kind", CASES + [("chi_square", {"max_reference": 700}, "category")])
def test_scan_detects_exactly_where_update_does(key, params, kind):
    """The batch path feeds a detector many values in one ``scan`` call: same detections, same
    signal, same state as value-by-value ``update``."""
    values = stream(kind) + stream(kind, seed=4) + stream(kind, seed=5)
    one, many = make_detector(key, params), make_detector(key, params)
    hits, signal = [], []
    for i, x in enumerate(values):
        if one.update(x):
            hits.append(i)
        signal.append(one.last_input)
    found, scanned, i = [], [], 0
    while i < len(values):
        k = many.scan(values, i, scanned if many.derived_signal else None)
        if k < len(values):
            found.append(k)
        i = k + 1
    assert found == hits and hits  # something to compare
    if many.derived_signal:
        assert scanned == signal
    assert many.window == one.window and many.params == one.params
