"""A labelled scenario for retraining: slices with their own concepts, one of which changes.

Each slice ``s`` labels an event with a logistic model over its inputs:
``P(y=1) = sigmoid(sharpness * (w_s . z + dev_s[device] + plan_s[plan] + b_s))`` where ``z`` are
the numeric features standardised, ``w_s = w_base + tilt_s`` (a shared direction tilted per
slice) and the categorical effects are shared plus a per-slice tilt. Numeric features are
Gaussians with a small per-slice offset; a few values are missing (null).

The drift is a concept change of one slice from ``pre_events`` on: its weights and
categorical effects are drawn afresh (inputs unchanged), so only its own labels move and a
model that served it well before is now wrong there. With ``revert_after`` the old concept
returns after that many post-drift events (a change that does not last; same inputs, same
draws otherwise). Everything comes from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BASE_TIME_MS = 1_790_000_000_000
DEVICES = ("ios", "android", "web")
PLANS = ("free", "pro", "team", "enterprise")


@dataclass(frozen=True)
class RetrainScenario:
    n_slices: int = 8
    n_numeric: int = 6
    pre_events: int = 4000  # per slice, before the drift (bootstrap data)
    post_events: int = 3000  # per slice, after the drift (the retraining snapshot)
    drifted: str = "s3"
    sharpness: float = 2.5
    missing_share: float = 0.02
    model: str = "bench-model"
    seed: int = 2026
    revert_after: int | None = None  # post-drift events after which the drifted slice's old concept returns

    @property
    def slices(self) -> list[str]:
        return [f"s{i}" for i in range(self.n_slices)]

    def _concepts(self, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
        w_base = rng.normal(0, 1, self.n_numeric)
        dev_base, plan_base = rng.normal(0, 0.7, len(DEVICES)), rng.normal(0, 0.7, len(PLANS))
        out = {}
        for s in self.slices:
            out[s] = {
                "w": w_base + rng.normal(0, 0.6, self.n_numeric),
                "dev": dev_base + rng.normal(0, 0.3, len(DEVICES)),
                "plan": plan_base + rng.normal(0, 0.3, len(PLANS)),
                "b": rng.normal(0, 0.3, 1),
                "offset": rng.normal(0, 0.3, self.n_numeric),
            }
        return out

    def _drifted_concept(self, rng: np.random.Generator, old: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            **old,
            "w": rng.normal(0, 1.2, self.n_numeric),
            "dev": rng.normal(0, 0.8, len(DEVICES)),
            "plan": rng.normal(0, 0.8, len(PLANS)),
        }

    def _reverted(self, i: int) -> bool:
        return self.revert_after is not None and i >= self.pre_events + self.revert_after

    def events(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(pre-drift events, post-drift events), each in event-time order within a slice."""
        rng = np.random.default_rng(self.seed)
        concepts = self._concepts(rng)
        drifted = self._drifted_concept(rng, concepts[self.drifted])
        pre, post = [], []
        for k, s in enumerate(self.slices):
            srng = np.random.default_rng([self.seed, k])
            n = self.pre_events + self.post_events
            z = srng.normal(0, 1, (n, self.n_numeric)) + concepts[s]["offset"]
            dev = srng.choice(len(DEVICES), size=n, p=[0.5, 0.35, 0.15])
            plan = srng.choice(len(PLANS), size=n, p=[0.4, 0.3, 0.2, 0.1])
            missing = srng.random((n, self.n_numeric)) < self.missing_share
            u = srng.random(n)
            for i in range(n):
                c = drifted if (s == self.drifted and i >= self.pre_events and not self._reverted(i)) else concepts[s]
                logit = self.sharpness * (z[i] @ c["w"] / np.sqrt(self.n_numeric) + c["dev"][dev[i]]
                                          + c["plan"][plan[i]] + c["b"][0])
                label = int(u[i] < 1 / (1 + np.exp(-logit)))
                event = {
                    "event_id": f"{s}-{i}",
                    "event_time": BASE_TIME_MS + i * 1000 + k,
                    "model": self.model,
                    "slice": s,
                    "features": {
                        f"x{j}": None if missing[i, j] else float(10 * (j + 1) + (j + 1) * z[i, j])
                        for j in range(self.n_numeric)
                    },
                    "categorical": {"device": DEVICES[dev[i]], "plan": PLANS[plan[i]]},
                    "prediction": None,
                    "label": label,
                }
                (pre if i < self.pre_events else post).append(event)
        return pre, post


def quick() -> RetrainScenario:
    return RetrainScenario(pre_events=500, post_events=400)
