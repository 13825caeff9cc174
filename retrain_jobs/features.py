"""Feature preprocessing of tabular events, fitted once at bootstrap and frozen in the manifest.

Why frozen: the encoders of every slice read these inputs, so refitting the standardisation
or the vocabularies during a selective update would silently change what frozen modules see.

- numeric feature ``f``: ``(x - mean) / std`` clipped to +-``CLIP`` (0 when missing) and a
  missing indicator, i.e. two columns;
- categorical feature ``c``: one-hot over the fitted vocabulary (most frequent first, at most
  ``max_levels``) plus one column for unknown or missing values.

Groups: each feature is its own group unless ``groups`` says otherwise, so a drifted feature
maps to one encoder.

The production model's own ``prediction``, when events carry one, is an input too (the numeric
pseudo-feature ``_prediction``, as a logit when every value is a probability): often the
most informative input there is, and what lets a slice adapter alone recalibrate a slice
whose concept moved (the ADAPTER tier).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from schemas.errors import ConfigError, DriftError

CLIP = 10.0
PREDICTION = "_prediction"  # the events' own `prediction`, as a numeric input
_EPS = 1e-4


class DataError(DriftError):
    """The events cannot feed the model (no labelled events, non-binary labels, ...)."""


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def _numeric_value(event: Mapping[str, Any], feature: str, logit: bool) -> Any:
    if feature != PREDICTION:
        return (event.get("features") or {}).get(feature)
    v = event.get("prediction")
    return v if _is_missing(v) or not logit else _logit(float(v))


@dataclass
class Preprocessor:
    numeric: dict[str, tuple[float, float]]  # feature -> (mean, std)
    categorical: dict[str, list[str]]  # feature -> vocabulary
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> features
    prediction_logit: bool = False  # PREDICTION is the logit of a probability (else the raw value)

    @classmethod
    def fit(
        cls,
        events: Sequence[Mapping[str, Any]],
        max_levels: int = 32,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> Preprocessor:
        if not events:
            raise DataError("cannot fit preprocessing on zero events")
        values: dict[str, list[float]] = {}
        counts: dict[str, Counter] = {}
        predictions = [float(e["prediction"]) for e in events if not _is_missing(e.get("prediction"))]
        logit = bool(predictions) and all(0.0 <= p <= 1.0 for p in predictions)
        if predictions:
            values[PREDICTION] = [_logit(p) if logit else p for p in predictions]
        for e in events:
            for f, v in (e.get("features") or {}).items():
                values.setdefault(f, [])
                if not _is_missing(v):
                    values[f].append(float(v))
            for c, v in (e.get("categorical") or {}).items():
                counts.setdefault(c, Counter())
                if v is not None:
                    counts[c][v] += 1
        numeric = {}
        for f in sorted(values):
            arr = np.asarray(values[f], dtype=np.float64)
            mean = float(arr.mean()) if arr.size else 0.0
            std = float(arr.std()) if arr.size > 1 else 1.0
            numeric[f] = (mean, std if std > 1e-12 else 1.0)
        categorical = {
            c: [lvl for lvl, _ in sorted(counts[c].items(), key=lambda kv: (-kv[1], kv[0]))[:max_levels]]
            for c in sorted(counts)
        }
        if groups:
            grouped = {g: list(fs) for g, fs in groups.items()}
            known = set(numeric) | set(categorical)
            covered = {f for fs in grouped.values() for f in fs}
            unknown = sorted(covered - known)
            if unknown:
                raise ConfigError(f"groups name unknown features {unknown}; known: {sorted(known)}")
            for f in sorted(known - covered):
                grouped[f] = [f]
        else:
            grouped = {f: [f] for f in sorted(set(numeric) | set(categorical))}
        if not grouped:
            raise DataError("events carry no features nor categorical values to learn from")
        return cls(numeric, categorical, grouped, logit)

    def width(self, feature: str) -> int:
        return 2 if feature in self.numeric else len(self.categorical[feature]) + 1

    def group_width(self, group: str) -> int:
        return sum(self.width(f) for f in self.groups[group])

    def group_of(self, feature: str) -> str | None:
        return next((g for g, fs in self.groups.items() if feature in fs), None)

    def transform(self, events: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Events -> one float32 tensor per group (rows in event order)."""
        n = len(events)
        cols: dict[str, np.ndarray] = {}
        for f, (mean, std) in self.numeric.items():
            raw = np.array([_numeric_value(e, f, self.prediction_logit) for e in events], dtype=object)
            miss = np.array([_is_missing(v) for v in raw], dtype=bool)
            vals = np.zeros(n, dtype=np.float32)
            if n and (~miss).any():
                z = (np.asarray(raw[~miss], dtype=np.float64) - mean) / std
                vals[~miss] = np.clip(z, -CLIP, CLIP)
            cols[f] = np.stack([vals, miss.astype(np.float32)], axis=1)
        for c, vocab in self.categorical.items():
            index = {lvl: i for i, lvl in enumerate(vocab)}
            onehot = np.zeros((n, len(vocab) + 1), dtype=np.float32)
            for i, e in enumerate(events):
                onehot[i, index.get((e.get("categorical") or {}).get(c), len(vocab))] = 1.0
            cols[c] = onehot
        return {
            g: torch.from_numpy(np.concatenate([cols[f] for f in fs], axis=1) if n else np.zeros((0, 0)))
            .float()
            .reshape(n, self.group_width(g))
            for g, fs in self.groups.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": {f: list(ms) for f, ms in self.numeric.items()},
            "categorical": self.categorical,
            "groups": self.groups,
            "prediction_logit": self.prediction_logit,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        return cls(
            {f: (float(m), float(s)) for f, (m, s) in d["numeric"].items()},
            {c: list(v) for c, v in d["categorical"].items()},
            {g: list(fs) for g, fs in d["groups"].items()},
            bool(d.get("prediction_logit", False)),
        )


def binary_labels(events: Iterable[Mapping[str, Any]]) -> torch.Tensor:
    """Labels as float 0/1; the reference model is a binary classifier."""
    out = []
    for e in events:
        y = e.get("label")
        if _is_missing(y) or float(y) not in (0.0, 1.0):
            raise DataError(f"event {e.get('event_id')!r}: label {y!r} is not 0 or 1 (binary labels only)")
        out.append(float(y))
    return torch.tensor(out, dtype=torch.float32)
