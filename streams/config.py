"""From the process settings to a ready monitor: the one place config becomes detectors."""

from __future__ import annotations

from typing import Callable

from schemas.settings import Settings
from streams.detectors import Detector, make_detector
from streams.monitor import Monitor, MonitorConfig, SliceState


def prototypes(settings: Settings) -> dict[str, Detector]:
    """One prototype detector per channel; every (slice, feature) gets clones of these."""
    delta = {"delta": settings.adwin_delta}
    indicator = {"delta": settings.adwin_delta, "calibrate": 0}  # 0/1 streams are already in [0, 1]
    return {
        "mean": make_detector(settings.detector, delta if settings.detector.startswith("adwin") else None),
        "variance": make_detector("adwin_variance", delta),
        "missing": make_detector("rate", {"alpha": settings.rate_alpha}),
        "range": make_detector("rate", {"alpha": settings.rate_alpha}),
        "category": make_detector("chi_square", {"alpha": settings.chi_square_alpha}),
        "error": make_detector("adwin", indicator),
        "label": make_detector("adwin", delta),
    }


def build_monitor(settings: Settings, loader: Callable[[str, str], SliceState | None] | None = None) -> Monitor:
    return Monitor(
        prototypes(settings),
        MonitorConfig(
            warmup_events=settings.warmup_events,
            cooldown_events=settings.cooldown_events,
            confirm_events=settings.confirm_events,
            stats_every_events=settings.stats_every_events,
            worker_id=settings.worker_id,
            app_version=settings.app_version,
        ),
        loader=loader,
    )
