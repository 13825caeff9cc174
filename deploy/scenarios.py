"""Synthetic prediction streams with known drift positions (fixed seeds).

Used by the demo, the tests and the benchmarks: every drift says which slice and feature
changes, how, and from which event of that slice on, so detection delay and false alarms
can be measured against ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

BASE_TIME_MS = 1_790_000_000_000


@dataclass(frozen=True)
class Drift:
    slice: str
    feature: str
    start: int  # index of the slice's event where the change begins
    kind: str = "mean"  # mean | scale
    size: float = 2.0  # in reference standard deviations (mean) or a factor (scale)


@dataclass
class Scenario:
    model: str = "demo-model"
    slices: tuple[str, ...] = ("eu-west", "us-east", "ap-south")
    features: tuple[str, ...] = ("amount", "latency_ms")
    events_per_slice: int = 3000
    drifts: tuple[Drift, ...] = field(default_factory=lambda: (Drift("eu-west", "amount", 1500),))
    seed: int = 42
    interval_ms: int = 100

    def events(self) -> Iterator[dict[str, Any]]:
        """Events round-robin over slices, so each slice's index grows in step."""
        rng = np.random.default_rng(self.seed)
        base_mean = {f: 10.0 * (i + 1) for i, f in enumerate(self.features)}
        base_std = {f: 2.0 * (i + 1) for i, f in enumerate(self.features)}
        drifts = {(d.slice, d.feature): d for d in self.drifts}
        devices = np.array(["ios", "android", "web"])
        for i in range(self.events_per_slice):
            for s_idx, slice_ in enumerate(self.slices):
                features = {}
                for f in self.features:
                    mean, std = base_mean[f], base_std[f]
                    d = drifts.get((slice_, f))
                    if d is not None and i >= d.start:
                        if d.kind == "mean":
                            mean += d.size * std
                        elif d.kind == "scale":
                            std *= d.size
                    features[f] = float(rng.normal(mean, std))
                score = 1.0 / (1.0 + math.exp(-(features[self.features[0]] - base_mean[self.features[0]]) / 4.0))
                yield {
                    "schema_version": 2,
                    "event_id": f"{self.seed}-{slice_}-{i}",
                    "event_time": BASE_TIME_MS + (i * len(self.slices) + s_idx) * self.interval_ms,
                    "model": self.model,
                    "slice": slice_,
                    "features": features,
                    "categorical": {"device": str(devices[rng.integers(0, 3)])},
                    "prediction": score,
                    "label": int(rng.random() < score),
                }

    @property
    def total_events(self) -> int:
        return self.events_per_slice * len(self.slices)
