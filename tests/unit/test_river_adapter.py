"""streams/detectors/river_adapter.py reaches into river's private ADWIN parts; these tests
fail when a river upgrade changes what those parts do, before any detection changes."""

from __future__ import annotations

import numpy as np
from river import drift

from streams.detectors.river_adapter import AdwinWindow


def _stream() -> list[float]:
    rng = np.random.default_rng(11)
    parts = [rng.normal(0, 1, 2000), rng.normal(1.5, 1, 1500), rng.normal(1.5, 3, 1500), rng.normal(-1, 1, 1000)]
    return [float(x) for x in np.concatenate(parts)]


def _public(values: list[float]) -> tuple[list[int], int]:
    ref = drift.ADWIN(delta=1e-5, clock=32, grace_period=10)
    hits = []
    for i, x in enumerate(values):
        ref.update(x)
        if ref.drift_detected:
            hits.append(i)
    return hits, int(ref.width)


def test_update_detects_where_rivers_public_adwin_does():
    values = _stream()
    expected, width = _public(values)
    window = AdwinWindow(1e-5, 32, 10)
    assert [i for i, x in enumerate(values) if window.update(x)] == expected
    assert len(expected) >= 2 and window.width == width  # the stream has changes to find


def test_scan_stops_at_each_detection_and_agrees_with_update():
    values = _stream()
    expected, width = _public(values)
    window, hits, i = AdwinWindow(1e-5, 32, 10), [], 0
    while i < len(values):
        k = window.scan(values, i)
        if k < len(values):
            hits.append(k)
        i = k + 1
    assert hits == expected and window.width == width


def test_load_is_a_fresh_window_holding_the_values():
    values = _stream()[:1500]
    window = AdwinWindow(1e-5, 32, 10)
    for x in _stream():
        window.update(x)
    window.load(values)
    ref = drift.ADWIN(delta=1e-5, clock=32, grace_period=10)
    for x in values:
        ref.update(x)
    assert window.width == ref.width and window.adwin.estimation == ref.estimation
    assert not window.adwin.drift_detected
