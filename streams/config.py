"""From the process settings (and the optional YAML model config) to a ready monitor: the
one place config becomes detectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.settings import Settings
from streams.detectors import Detector, make_detector
from streams.model_config import DetectorPlan, ModelConfig, load_model_config
from streams.monitor import Monitor, MonitorConfig
from streams.state import SliceState


def channel_specs(settings: Settings) -> dict[str, tuple[str, dict[str, Any]]]:
    """The default (detector key, params) of every channel; the model config adjusts these."""
    delta = {"delta": settings.adwin_delta}
    cusum = {"arl": settings.cusum_arl}
    return {
        "mean": (settings.detector, delta if settings.detector.startswith("adwin") else {}),
        "variance": ("adwin_variance", delta),
        "missing": ("bernoulli_cusum", cusum),
        "range": ("bernoulli_cusum", cusum),
        "category": ("chi_square", {"alpha": settings.chi_square_alpha}),
        "error": ("bernoulli_cusum", {"arl": settings.error_arl}),  # binary labels: 0/1 misclassification
        # ... and within each class: a rare class reaches 500 values late, so its reference is shorter
        "error_pos": ("bernoulli_cusum", {"arl": settings.error_arl, "reference_size": 100}),
        "error_neg": ("bernoulli_cusum", {"arl": settings.error_arl, "reference_size": 100}),
        "abs_error": ("adwin", delta),  # other labels: absolute error
        "label": ("adwin", delta),
    }


def prototypes(settings: Settings) -> dict[str, Detector]:
    """One prototype detector per channel; every (slice, feature) gets clones of these."""
    return {name: make_detector(key, params) for name, (key, params) in channel_specs(settings).items()}


def model_config(settings: Settings) -> ModelConfig | None:
    """The parsed ``settings.detection_config`` file, if one is set."""
    return load_model_config(settings.detection_config) if settings.detection_config else None


def build_monitor(
    settings: Settings,
    loader: Callable[[str, str], SliceState | None] | None = None,
    config: ModelConfig | None = None,
) -> Monitor:
    config = config if config is not None else model_config(settings)
    plan = DetectorPlan(channel_specs(settings), settings.warmup_events, config) if config is not None else None
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
        plan=plan,
    )
