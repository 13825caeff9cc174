"""Dependency map: which modules an alert touches, smallest set first.

Tiers, cheapest first (escalate only when the validation gate rejects the cheaper one):

- ``ADAPTER``: the adapters of the alerted slices (``adapter.<slice>``). Every alert type starts
  here: performance or label drift in slice s is s's concept, data drift / data quality on
  feature f in s first gets s's adapter recalibrated to the shifted inputs.
- ``MODULE``: adds the modules on the drifted path: for data drift / quality on f the encoder
  reading f; for performance / label drift (no feature) the shared trunk. Still trained on the
  alerted slices' data.
- ``FULL``: every module (on every slice's data). Only when asked (``tier="FULL"``), never chosen.

The same drift (type class and feature) in at least ``broad_share`` of the slices seen, and in
at least ``broad_min_slices`` slices, is a shared cause (the router groups such alerts into one
request by the same two settings, ``router_broad_fraction`` and ``router_broad_min_slices``): the plan starts at ``MODULE`` and includes the trunk and the encoders of the
drifted features.

Names follow the manifest's modules (what each reads / serves); without a manifest the
reference naming is used (``adapter.<slice>``, ``encoder.<feature>``, ``trunk``) and a FULL plan
is ``("*",)``, "all modules of the current version".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.errors import ConfigError
from schemas.retraining import CONCEPT_ALERTS, FEATURE_ALERTS, TIERS

__all__ = ["ALL_MODULES", "CONCEPT_ALERTS", "FEATURE_ALERTS", "Plan", "next_tier", "plan"]
ALL_MODULES = "*"


@dataclass(frozen=True)
class Plan:
    tier: str
    modules: tuple[str, ...]
    slices: tuple[str, ...]


def next_tier(tier: str) -> str | None:
    """ADAPTER -> MODULE -> FULL -> None."""
    _check_tier(tier)
    i = TIERS.index(tier)
    return TIERS[i + 1] if i + 1 < len(TIERS) else None


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ConfigError(f"unknown tier {tier!r}; valid: {', '.join(TIERS)}")


def _modules_of(manifest: Any) -> dict[str, Mapping[str, Any]] | None:
    if manifest is None:
        return None
    return manifest.modules if hasattr(manifest, "modules") else manifest["modules"]


def _encoders_reading(modules: Mapping[str, Mapping[str, Any]] | None, feature: str) -> list[str]:
    if modules is None:
        return [f"encoder.{feature}"]
    return sorted(n for n, spec in modules.items() if n.startswith("encoder.") and feature in spec["reads"])


def plan(
    manifest: Any,
    alerts: Sequence[Mapping[str, Any]],
    tier: str | None = None,
    n_slices_seen: int | None = None,
    *,
    broad_share: float = 0.6,
    broad_min_slices: int = 3,
) -> Plan:
    """The smallest module set for the alerts of ONE model at ``tier`` (None: choose)."""
    if not alerts:
        raise ConfigError("plan needs at least one alert")
    models = {a["model"] for a in alerts if a.get("model")}
    if len(models) > 1:
        raise ConfigError(f"plan takes the alerts of one model, got {sorted(models)}")
    modules = _modules_of(manifest)
    slices = tuple(sorted({a["slice"] for a in alerts}))
    if n_slices_seen is None and modules is not None:
        n_slices_seen = sum(1 for n in modules if n.startswith("adapter.") and n != "adapter._default")
    # "the same drift": same cause class and feature, across slices
    spread: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for a in alerts:
        cause = "feature" if a["alert_type"] in FEATURE_ALERTS else "concept"
        spread[(cause, a.get("feature") if cause == "feature" else None)].add(a["slice"])
    broad = {
        key
        for key, ss in spread.items()
        if n_slices_seen and len(ss) >= broad_min_slices and len(ss) >= broad_share * max(n_slices_seen, len(slices))
    }
    if tier is None:
        tier = "MODULE" if broad else "ADAPTER"
    _check_tier(tier)

    if tier == "FULL":
        return Plan("FULL", tuple(sorted(modules)) if modules is not None else (ALL_MODULES,), slices)
    chosen = {f"adapter.{s}" for s in slices}
    if tier == "MODULE":
        for a in alerts:
            if a["alert_type"] in FEATURE_ALERTS and a.get("feature"):
                chosen.update(_encoders_reading(modules, a["feature"]))
            elif a["alert_type"] in CONCEPT_ALERTS:
                chosen.add("trunk")
        if broad:
            chosen.add("trunk")
    return Plan(tier, tuple(sorted(chosen)), slices)
