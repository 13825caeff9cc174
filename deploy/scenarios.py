"""Synthetic prediction streams with known drift positions (fixed seeds).

Used by the demo, the tests and the benchmarks: every drift says which slice and feature
changes, how, and from which event of that slice on, so detection delay and false alarms
can be measured against ground truth (:meth:`Scenario.expected_alerts`).

How a slice's events are made (everything seeded from ``Scenario.seed`` and the names of
the slice and column, so a slice's events do not depend on the other slices or on drifts
planned elsewhere):

- numeric ``features``: numpy Gaussians, feature ``i`` with mean ``10(i+1)`` and sd ``2(i+1)``;
- ``categorical``: numpy draws from ``category_levels`` (base proportions);
- ``prediction`` and ``label``: river's ``Hyperplane`` generator is the world (its inputs are
  the model's inputs, its label the truth, with ``label_noise`` of the labels flipped), and the
  deployed model is a river ``LogisticRegression`` trained on the first ``train_events``
  samples of that slice's stream. The model's inputs are latent: they are not the monitored
  ``features``, so a drift of a monitored feature changes neither predictions nor labels, and
  with no performance or label drift planned the error rate and the label rate stay put.

Drift kinds, what ``Drift.size`` means for each, and the alert each should produce:

==============  ======================================================  ==================  ==========
kind            change from the onset on                                 size (default 2.0)  alert
==============  ======================================================  ==================  ==========
mean            numeric mean + size x reference sd                       sds                 DATA_DRIFT
scale           numeric sd x size (same draws, rescaled)                 factor              DATA_DRIFT
category_mix    odds of the rarest category x size (others scaled down)  odds factor         DATA_DRIFT
error_rate      labels flipped so the model's error rate becomes size x  error factor        PERFORMANCE_DRIFT
                its reference error (rate of positives unchanged)                            (feature None)
label_shift     prior shift: odds of label 1 x size, by rejection        odds factor         LABEL_DRIFT
                sampling of the world (inputs given the label unchanged)                     ("label")
missing         a share size/10 of the values become null                share x 10          DATA_QUALITY
out_of_range    a share size/10 of the values become the sentinel -999   share x 10          DATA_QUALITY
==============  ======================================================  ==================  ==========

A prior shift moves the model's predictions too (the inputs follow the labels), and since
the model's per-class errors are not exactly equal the error rate moves slightly: those are
listed as ``side_effects`` of a label shift, alerts that are neither required nor false.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BASE_TIME_MS = 1_790_000_000_000
OUT_OF_RANGE_SENTINEL = -999.0

ALERT_FOR_KIND: dict[str, str] = {
    "mean": "DATA_DRIFT",
    "scale": "DATA_DRIFT",
    "category_mix": "DATA_DRIFT",
    "error_rate": "PERFORMANCE_DRIFT",
    "label_shift": "LABEL_DRIFT",
    "missing": "DATA_QUALITY",
    "out_of_range": "DATA_QUALITY",
}
KINDS: tuple[str, ...] = tuple(ALERT_FOR_KIND)
NUMERIC_KINDS = frozenset({"mean", "scale", "missing", "out_of_range"})
LABEL = "label"
PREDICTION = "prediction"
PERFORMANCE = None  # the "feature" of performance alerts

# Ground-truth (alert_type, feature) pairs that a drift kind may also cause; feature "" means
# "the drifted feature itself".
SIDE_EFFECTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "label_shift": (("DATA_DRIFT", PREDICTION), ("PERFORMANCE_DRIFT", PERFORMANCE)),
}


@dataclass(frozen=True)
class Drift:
    slice: str
    feature: str | None  # None (or anything) for error_rate; "label" for label_shift
    start: int  # index of the slice's event where the change begins
    kind: str = "mean"  # one of KINDS
    size: float = 2.0  # meaning per kind: see the module docstring

    def __post_init__(self) -> None:
        if self.kind not in ALERT_FOR_KIND:
            raise ValueError(f"drift kind {self.kind!r} unknown; valid: {', '.join(KINDS)}")
        if not self.size > 0 or not math.isfinite(self.size):
            raise ValueError(f"drift size must be a positive number, got {self.size!r}")

    @property
    def alert_type(self) -> str:
        return ALERT_FOR_KIND[self.kind]

    @property
    def alert_feature(self) -> str | None:
        """The ``feature`` of the alert this drift should produce."""
        if self.kind == "error_rate":
            return PERFORMANCE
        if self.kind == "label_shift":
            return LABEL
        return self.feature


@dataclass(frozen=True)
class ExpectedAlert:
    """Ground truth for one planned drift: the alert it should produce and where it begins."""

    slice: str
    feature: str | None
    alert_type: str
    kind: str
    size: float
    onset_index: int  # index of the first changed event among the slice's events
    onset_position: int  # index of that event in the whole stream (Scenario.events() order)
    onset_event_time: int  # its event_time (epoch ms)
    side_effects: tuple[tuple[str, str | None], ...] = ()  # (alert_type, feature) also allowed after onset

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["side_effects"] = [list(x) for x in self.side_effects]
        return d


def _default_levels() -> dict[str, dict[str, float]]:
    return {"device": {"ios": 1 / 3, "android": 1 / 3, "web": 1 / 3}}


def _seed_of(*parts: int | str) -> np.random.SeedSequence:
    return np.random.SeedSequence([p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts])


def _rng(*parts: int | str) -> np.random.Generator:
    return np.random.default_rng(_seed_of(*parts))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class _World:
    """One slice's river world and the model deployed on it."""

    generator: Iterator[tuple[dict[int, float], int]]
    weights: np.ndarray
    intercept: float
    error: float  # the model's error rate on a held-out stretch of the stable world

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(x @ self.weights + self.intercept)


@dataclass
class Scenario:
    model: str = "demo-model"
    slices: tuple[str, ...] = ("eu-west", "us-east", "ap-south")
    features: tuple[str, ...] = ("amount", "latency_ms")
    events_per_slice: int = 3000
    drifts: tuple[Drift, ...] = field(default_factory=lambda: (Drift("eu-west", "amount", 1500),))
    seed: int = 42
    interval_ms: int = 100
    categorical: tuple[str, ...] = ("device",)
    # base proportions per categorical feature; one missing here gets three equally likely levels
    category_levels: dict[str, dict[str, float]] = field(default_factory=_default_levels)
    model_inputs: int = 5  # the Hyperplane's dimension (latent inputs of the model)
    label_noise: float = 0.05  # river Hyperplane's noise_percentage
    train_events: int = 5000  # world samples the model is trained on before serving

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        if len(set(self.slices)) != len(self.slices) or not self.slices:
            raise ValueError(f"slices must be distinct and non-empty: {self.slices}")
        if set(self.features) & set(self.categorical):
            raise ValueError("a feature cannot be both numeric and categorical")
        for d in self.drifts:
            if d.slice not in self.slices:
                raise ValueError(f"drift on unknown slice {d.slice!r}; slices: {self.slices}")
            if d.start < 0:
                raise ValueError(f"drift start {d.start} is negative")
            if d.kind in NUMERIC_KINDS and d.feature not in self.features:
                raise ValueError(f"{d.kind} drift needs a numeric feature of {self.features}, got {d.feature!r}")
            if d.kind == "category_mix" and d.feature not in self.categorical:
                raise ValueError(f"category_mix needs a categorical feature of {self.categorical}, got {d.feature!r}")
        keys = [(d.slice, d.alert_feature, d.kind) for d in self.drifts]
        if len(set(keys)) != len(keys):
            raise ValueError("two drifts of the same kind on the same slice and feature")

    # ------------------------------------------------------------------ layout
    @property
    def total_events(self) -> int:
        return self.events_per_slice * len(self.slices)

    def position(self, slice_: str, index: int) -> int:
        """Index in the whole stream of the slice's event ``index`` (round-robin over slices)."""
        return index * len(self.slices) + self.slices.index(slice_)

    def event_time(self, slice_: str, index: int) -> int:
        return BASE_TIME_MS + self.position(slice_, index) * self.interval_ms

    def slice_event_times(self, slice_: str) -> np.ndarray:
        """event_time of each of the slice's events, ascending."""
        idx = np.arange(self.events_per_slice, dtype=np.int64)
        return BASE_TIME_MS + (idx * len(self.slices) + self.slices.index(slice_)) * self.interval_ms

    def channels(self) -> list[str | None]:
        """What gets monitored per slice: numeric and categorical features, the label, performance."""
        return [*self.features, *self.categorical, LABEL, PERFORMANCE]

    def levels(self, name: str) -> dict[str, float]:
        return self.category_levels.get(name) or {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}

    # ------------------------------------------------------------------ ground truth
    def active_drifts(self) -> list[Drift]:
        """The drifts that begin within the stream (a start past its end never happens)."""
        return [d for d in self.drifts if d.start < self.events_per_slice]

    def expected_alerts(self) -> list[ExpectedAlert]:
        self.validate()
        out = []
        for d in self.active_drifts():
            out.append(
                ExpectedAlert(
                    slice=d.slice,
                    feature=d.alert_feature,
                    alert_type=d.alert_type,
                    kind=d.kind,
                    size=d.size,
                    onset_index=d.start,
                    onset_position=self.position(d.slice, d.start),
                    onset_event_time=self.event_time(d.slice, d.start),
                    side_effects=SIDE_EFFECTS.get(d.kind, ()),
                )
            )
        return out

    # ------------------------------------------------------------------ generation
    def _world(self, slice_: str) -> _World:
        from river import linear_model, optim
        from river.datasets import synth
        from river.optim import schedulers

        seed = int(_seed_of(self.seed, slice_, "world").generate_state(1)[0])
        gen = iter(
            synth.Hyperplane(
                seed=seed, n_features=self.model_inputs, n_drift_features=0, noise_percentage=self.label_noise
            )
        )
        lr = schedulers.InverseScaling(2.0, power=0.5)
        model = linear_model.LogisticRegression(optimizer=optim.SGD(lr), intercept_lr=lr, l2=0.0)
        for _ in range(self.train_events):
            x, y = next(gen)
            model.learn_one(x, y)
        w = np.array([model.weights.get(i, 0.0) for i in range(self.model_inputs)])
        world = _World(gen, w, float(model.intercept), 0.0)
        x_hold, y_hold = self._draw(world, 4000)
        world.error = float(np.mean((world.predict(x_hold) >= 0.5) != y_hold))
        return world

    def _draw(self, world: _World, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((n, self.model_inputs))
        y = np.empty(n, dtype=np.int64)
        for i in range(n):
            xi, y[i] = next(world.generator)
            x[i] = [xi[j] for j in range(self.model_inputs)]
        return x, y

    def _slice_columns(self, slice_: str) -> dict[str, Any]:
        """The slice's events as columns: numeric (NaN = missing), categorical, prediction, label."""
        n = self.events_per_slice
        drifts = [d for d in self.active_drifts() if d.slice == slice_]
        numeric: dict[str, np.ndarray] = {}
        for i, f in enumerate(self.features):
            mean, std = 10.0 * (i + 1), 2.0 * (i + 1)
            z = _rng(self.seed, slice_, f).standard_normal(n)
            v = mean + std * z
            for d in drifts:
                if d.feature != f:
                    continue
                s = d.start
                if d.kind == "mean":
                    v[s:] += d.size * std
                elif d.kind == "scale":
                    v[s:] = mean + (v[s:] - mean) * d.size
                elif d.kind in ("missing", "out_of_range"):
                    hit = _rng(self.seed, slice_, f, d.kind).random(n - s) < min(1.0, d.size / 10.0)
                    v[s:][hit] = np.nan if d.kind == "missing" else OUT_OF_RANGE_SENTINEL
            numeric[f] = v

        categorical: dict[str, np.ndarray] = {}
        for c in self.categorical:
            names = list(self.levels(c))
            p = np.array([self.levels(c)[k] for k in names], dtype=float)
            p /= p.sum()
            u = _rng(self.seed, slice_, c).random(n)
            idx = np.minimum(np.searchsorted(np.cumsum(p), u, side="right"), len(p) - 1)
            for d in drifts:
                if d.kind == "category_mix" and d.feature == c:
                    q = _mixed(p, d.size)
                    idx[d.start :] = np.minimum(
                        np.searchsorted(np.cumsum(q), u[d.start :], side="right"), len(q) - 1
                    )
            categorical[c] = np.array(names, dtype=object)[idx]

        world = self._world(slice_)
        shift = next((d for d in drifts if d.kind == "label_shift"), None)
        if shift is None:
            x, y = self._draw(world, n)
        else:
            x0, y0 = self._draw(world, shift.start)
            x1, y1 = self._prior_shifted(world, n - shift.start, shift.size, _rng(self.seed, slice_, "label_shift"))
            x, y = np.vstack([x0, x1]), np.concatenate([y0, y1])
        prediction = world.predict(x)
        for d in drifts:
            if d.kind == "error_rate":
                e0 = min(world.error, 0.49)
                target = min(0.5, d.size * e0)
                flip_share = max(0.0, (target - e0) / (1.0 - 2.0 * e0))
                flip = _rng(self.seed, slice_, "error_rate").random(n - d.start) < flip_share
                y[d.start :][flip] = 1 - y[d.start :][flip]
        return {"numeric": numeric, "categorical": categorical, "prediction": prediction, "label": y}

    def _prior_shifted(
        self, world: _World, n: int, odds: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """n samples of the world with the odds of label 1 multiplied by ``odds`` (rejection sampling)."""
        keep_pos, keep_neg = (1.0, 1.0 / odds) if odds >= 1 else (odds, 1.0)
        xs, ys = [], []
        while len(ys) < n:
            xi, yi = next(world.generator)
            if rng.random() < (keep_pos if yi == 1 else keep_neg):
                xs.append([xi[j] for j in range(self.model_inputs)])
                ys.append(yi)
        return np.array(xs), np.array(ys, dtype=np.int64)

    def columns(self) -> dict[str, dict[str, Any]]:
        """Every slice's columns (see ``_slice_columns``), keyed by slice."""
        self.validate()
        return {s: self._slice_columns(s) for s in self.slices}

    def events(self, columns: dict[str, dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
        """Events round-robin over slices, so each slice's index grows in step.

        ``columns`` (from :meth:`columns`) skips generating them again.
        """
        cols = columns if columns is not None else self.columns()
        for i in range(self.events_per_slice):
            for s_idx, slice_ in enumerate(self.slices):
                c = cols[slice_]
                features = {}
                for f, v in c["numeric"].items():
                    x = float(v[i])
                    features[f] = None if math.isnan(x) else x
                yield {
                    "schema_version": 2,
                    "event_id": f"{self.seed}-{slice_}-{i}",
                    "event_time": BASE_TIME_MS + (i * len(self.slices) + s_idx) * self.interval_ms,
                    "model": self.model,
                    "slice": slice_,
                    "features": features,
                    "categorical": {k: str(v[i]) for k, v in c["categorical"].items()},
                    "prediction": float(c["prediction"][i]),
                    "label": int(c["label"][i]),
                }

    def write_jsonl(self, path: Path | str, columns: dict[str, dict[str, Any]] | None = None) -> int:
        """Write the events as JSON lines (what ``driftctl produce --file`` reads); returns the count."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with path.open("w") as fh:
            for ev in self.events(columns):
                fh.write(to_json_line(ev))
                n += 1
        return n


def to_json_line(event: dict[str, Any]) -> str:
    """One event in the JSON-lines form of ``driftctl produce --file`` (nulls for missing values)."""
    return json.dumps({k: v for k, v in event.items() if k != "schema_version"}, separators=(",", ":")) + "\n"


def _mixed(p: np.ndarray, odds: float) -> np.ndarray:
    """Proportions with the odds of the rarest category multiplied by ``odds``, the rest rescaled."""
    k = int(np.argmin(p))
    q = p[k]
    q_new = q * odds / (q * odds + (1.0 - q))
    out = p * ((1.0 - q_new) / (1.0 - q)) if q < 1 else p.copy()
    out[k] = q_new
    return out
