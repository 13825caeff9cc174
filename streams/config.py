"""From the process settings to a ready monitor: the one place config becomes detectors."""

from __future__ import annotations

from typing import Callable

from schemas.settings import Settings
from streams.detectors import make_detector
from streams.monitor import Monitor, MonitorConfig, SliceState


def build_monitor(settings: Settings, loader: Callable[[str, str], SliceState | None] | None = None) -> Monitor:
    params = {"delta": settings.adwin_delta} if settings.detector == "adwin" else None
    return Monitor(
        make_detector(settings.detector, params),
        MonitorConfig(
            warmup_events=settings.warmup_events,
            cooldown_events=settings.cooldown_events,
            stats_every_events=settings.stats_every_events,
            worker_id=settings.worker_id,
            app_version=settings.app_version,
        ),
        loader=loader,
    )
