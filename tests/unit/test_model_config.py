"""The YAML model config: per-feature detector overrides, validated at start with the path named."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from schemas.settings import load_settings
from streams.config import build_monitor
from streams.detectors import BernoulliCusumDetector, ChiSquareDetector, PageHinkleyDetector
from streams.model_config import load_model_config, parse_model_config

YAML = """
models:
  fraud:
    ignore: [session_id]
    features:
      amount:
        detector: page_hinkley
        threshold: 60
        warmup_events: 200
        channels:
          variance: null
          missing: {arl: 1.0e8}
      device: {detector: chi_square, alpha: 1.0e-8}
      label: {delta: 1.0e-6}
      performance: {arl: 1.0e7}
  "*":
    warmup_events: 50
"""

EVENT = {
    "model": "fraud", "slice": "eu", "event_time": 1, "prediction": 0.9, "label": 1,
    "features": {"amount": 1.0, "latency": 2.0, "session_id": 3.0}, "categorical": {"device": "ios"},
}  # fmt: skip


def monitor_for(tmp_path, text: str = YAML):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return build_monitor(load_settings(detection_config=path))


def test_overrides_apply_when_a_slice_clones_its_detectors(tmp_path):
    m = monitor_for(tmp_path)
    m.observe(EVENT, "t", 0, 0, 0)
    st = m.slices[("fraud", "eu")]
    amount = st.numeric["amount"]
    assert isinstance(amount.mean.detector, PageHinkleyDetector) and amount.mean.detector.ph_threshold == 60
    assert amount.mean.quiet_until == 200 and amount.variance is None
    assert amount.missing.detector.arl == 1e8 and amount.missing.quiet_until == 200  # the feature's warm-up
    assert amount.range.detector.arl == load_settings().cusum_arl  # untouched channels keep the defaults
    latency = st.numeric["latency"]
    assert latency.mean.detector.key == "adwin" and latency.mean.quiet_until == load_settings().warmup_events
    assert st.numeric["session_id"] is None  # ignored
    device = st.categorical["device"].category.detector
    assert isinstance(device, ChiSquareDetector) and device.alpha == 1e-8
    assert st.label.label.detector.delta == 1e-6
    assert isinstance(st.error.error.detector, BernoulliCusumDetector) and st.error.error.detector.arl == 1e7
    # each (slice, feature) has its own clone
    m.observe({**EVENT, "slice": "us"}, "t", 0, 1, 0)
    assert m.slices[("fraud", "us")].numeric["amount"].mean.detector is not amount.mean.detector


def test_the_star_model_covers_the_others(tmp_path):
    m = monitor_for(tmp_path)
    m.observe({**EVENT, "model": "other"}, "t", 0, 0, 0)
    st = m.slices[("other", "eu")]
    assert st.numeric["amount"].mean.detector.key == "adwin" and st.numeric["amount"].mean.quiet_until == 50
    assert st.numeric["session_id"] is not None


@pytest.mark.parametrize(
    "text, message",
    [
        ("models: {m: {features: {x: {detector: adwinn}}}}", "unknown detector 'adwinn'; valid: adwin, adwin_variance"),
        ("models: {m: {features: {x: {dleta: 0.1}}}}", "models.m.features.x: unknown key 'dleta' for detector 'adwin'; valid: calibrate, channels, clock, delta"),
        ("models: {m: {features: {x: {detector: chi_square, delta: 0.1}}}}", "unknown key 'delta' for detector 'chi_square'"),
        ("models: {m: {features: {x: {channels: {mena: null}}}}}", "unknown channel (models.m.features.x.channels) 'mena'; valid: abs_error"),
        ("models: {m: {features: {x: {delta: 5}}}}", "adwin.delta must be in (0, 1)"),
        ("models: {m: {warmup_events: -1}}", "models.m.warmup_events: Input should be greater than or equal to 0"),
        ("modles: {}", "modles: Extra inputs are not permitted"),
        ("models: [1, 2]", "models: Input should be a valid dictionary"),
    ],
)
def test_bad_configs_fail_at_start_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        monitor_for(tmp_path, text)
    assert message in str(info.value)


def test_no_file_means_defaults_and_a_missing_file_is_named(tmp_path):
    assert parse_model_config(None).models == {}
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_model_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        (tmp_path / "bad.yaml").write_text("models: {")
        load_model_config(tmp_path / "bad.yaml")
