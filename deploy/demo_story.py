"""The demo's synthetic world: labelled prediction events whose concept changes in some slices.

:meth:`RetrainStory.events` is the history up to and past the change (what the demo produces
first); :meth:`RetrainStory.live_events` continues it as live traffic after a retraining, with
the change lasting or reverted, for the release story (shadow, canary, watch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.scenarios import BASE_TIME_MS

DEVICES = ("ios", "android", "web")


@dataclass(frozen=True)
class RetrainStory:
    """Labelled prediction events where the world changes in some slices and not in others.

    Each slice labels an event with its own logistic concept over the numeric features
    (standardised) and the device; the deployed model's ``prediction`` is that concept as it
    was. From ``onset`` on, the concept of every ``drifted`` slice turns (its weights are
    mirrored), inputs unchanged: the model's error rate there jumps (PERFORMANCE_DRIFT) while
    nothing moves elsewhere. A model trained on the features can learn either regime, so a
    retrained slice adapter genuinely recovers. Everything is seeded.
    """

    model: str = "demo-model"
    slices: tuple[str, ...] = ("eu-west", "us-east", "ap-south", "sa-east", "af-north")
    drifted: tuple[str, ...] = ("eu-west", "ap-south")
    events_per_slice: int = 3000
    onset: int = 1500
    n_numeric: int = 4
    sharpness: float = 3.0
    seed: int = 11
    interval_ms: int = 100

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f"x{j}" for j in range(self.n_numeric))

    @property
    def total_events(self) -> int:
        return self.events_per_slice * len(self.slices)

    def _concept(self, k: int) -> tuple[np.ndarray, np.ndarray, float, np.random.Generator]:
        """Slice k's concept (weights, device effects, bias) and its generator, positioned after them."""
        w_base = np.random.default_rng(self.seed).normal(0, 1, self.n_numeric)
        srng = np.random.default_rng([self.seed, k])
        w = w_base + srng.normal(0, 0.4, self.n_numeric)
        dev = srng.normal(0, 0.5, 3)
        b = srng.normal(0, 0.2)
        return w, dev, b, srng

    def _draw(self, k: int, srng: np.random.Generator, n: int, changed: np.ndarray) -> tuple:
        """n events of slice k: inputs, device, the deployed model's prediction (the old concept),
        labels (from the new concept where ``changed``)."""
        w, dev, b, _ = self._concept(k)
        z = srng.normal(0, 1, (n, self.n_numeric))
        d = srng.integers(0, 3, n)
        old = self.sharpness * (z @ w / math.sqrt(self.n_numeric) + dev[d] + b)
        new = self.sharpness * (-(z @ w) / math.sqrt(self.n_numeric) - dev[d] + b)
        y = (srng.random(n) < 1 / (1 + np.exp(-np.where(changed, new, old)))).astype(int)
        return z, d, 1 / (1 + np.exp(-old)), y

    def _event(self, k: int, i: int, z: np.ndarray, d: np.ndarray, pred: np.ndarray, y: np.ndarray, row: int) -> dict:
        s = self.slices[k]
        return {
            "event_id": f"{self.seed}-{s}-{i}",
            "event_time": BASE_TIME_MS + (i * len(self.slices) + k) * self.interval_ms,
            "model": self.model,
            "slice": s,
            "features": {f"x{j}": float(10 * (j + 1) + (j + 1) * z[row, j]) for j in range(self.n_numeric)},
            "categorical": {"device": DEVICES[d[row]]},
            "prediction": float(pred[row]),
            "label": int(y[row]),
        }

    def events(self) -> Iterator[dict]:
        """Events round-robin over slices (a slice's index grows in step with the others')."""
        n = self.events_per_slice
        cols = {}
        for k, s in enumerate(self.slices):
            srng = self._concept(k)[3]
            cols[k] = self._draw(k, srng, n, (np.arange(n) >= self.onset) & (s in self.drifted))
        for i in range(n):
            for k in range(len(self.slices)):
                yield self._event(k, i, *cols[k], i)

    def live_events(self, start: int, n: int, reverted: bool = False) -> list[dict]:
        """Events ``start`` .. ``start + n - 1`` of every slice, after :meth:`events` (``start`` >=
        ``events_per_slice``): the drifted slices keep their new concept, or with ``reverted``
        are back on the old one (a change that did not last). Seeded by ``start``."""
        if start < self.events_per_slice:
            raise ValueError(f"live events start after the history: start {start} < {self.events_per_slice}")
        cols = {}
        for k, s in enumerate(self.slices):
            srng = np.random.default_rng([self.seed, k, 1, start])
            cols[k] = self._draw(k, srng, n, np.full(n, s in self.drifted and not reverted))
        return [self._event(k, start + r, *cols[k], r) for r in range(n) for k in range(len(self.slices))]

    def write_jsonl(self, path: Path | str) -> int:
        """The events as JSON lines, what ``driftctl produce --file`` reads; returns the count."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with path.open("w") as fh:
            for ev in self.events():
                fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
                n += 1
        return n
