"""The optional YAML model config: per-model, per-feature detector overrides, and the
mapping of users' own event topics onto the canonical Event.

Parsed and validated once at start (``load_model_config``); every detector it names is
built right away (``make_plan``), so a bad key or parameter fails the worker at start
with its path in the file and the valid choices, never later on some event.

.. code-block:: yaml

    models:
      fraud:                        # a model name, or "*" for every model not listed
        warmup_events: 100          # optional, for every channel of this model
        ignore: [session_id]        # features not monitored at all
        features:
          amount:                   # numeric: overrides its "mean" channel
            detector: page_hinkley  # any registered key; params next to it
            threshold: 60
            warmup_events: 200
            channels:               # other channels of the feature; null switches one off
              variance: null
              missing: {arl: 1.0e8}
          device: {detector: chi_square, alpha: 1.0e-8}   # categorical: its "category" channel
          label: {delta: 1.0e-6}                          # the label channel
          performance: {arl: 1.0e7}                       # the prediction-error channel
    sources:                        # users' own topics: see streams.sources
      - topic: payments.scored
        ...

A feature's own keys (``detector``, its parameters, ``warmup_events``) apply to its main
channel: ``mean`` for a numeric feature, ``category`` for a categorical one, ``label`` for
"label", ``error`` for "performance". Parameters without ``detector`` adjust the default
detector of that channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import ConfigError, UnknownKeyError
from streams.detectors import DETECTORS, Detector, detector_params, make_detector
from streams.monitor import CHANNEL_NAMES, GROUP_CHANNELS, LABEL_GROUP

MAIN_CHANNEL = {"numeric": "mean", "categorical": "category", "label": "label", "error": "error"}
PERFORMANCE = "performance"  # the feature name of the prediction-error group in the config
RESERVED = ("detector", "warmup_events", "channels")


class ChannelOverride(BaseModel):
    """A detector key, its parameters (extra keys) and a warm-up, all optional."""

    model_config = ConfigDict(extra="allow")

    detector: str | None = None
    warmup_events: int | None = Field(None, ge=0)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class FeatureOverride(ChannelOverride):
    channels: dict[str, ChannelOverride | None] = Field(default_factory=dict)


class ModelOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warmup_events: int | None = Field(None, ge=0)
    ignore: list[str] = Field(default_factory=list)
    features: dict[str, FeatureOverride] = Field(default_factory=dict)


class ModelConfig(BaseModel):
    """The whole file. ``sources`` is validated by :mod:`streams.sources`."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelOverride] = Field(default_factory=dict)
    sources: list[dict[str, Any]] = Field(default_factory=list)


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(top level)"


def parse_model_config(data: Any, origin: str = "model config") -> ModelConfig:
    """Validate a parsed YAML/JSON document; errors name the path of the bad key."""
    try:
        return ModelConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{origin}: " + "; ".join(problems)) from exc


def load_model_config(path: Path | str) -> ModelConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"model config {path}: cannot read it: {exc}") from exc
    except yaml.YAMLError as exc:  # one line: where, then what (the library's text spans several)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"model config {path}: not valid YAML{where}: {' '.join(str(what).split())}") from None
    return parse_model_config(data, f"model config {path}")


ChannelSpec = tuple[str, dict[str, Any]]  # (detector key, params)


class DetectorPlan:
    """(model, group kind, feature) -> channel -> (prototype, warm-up), with the overrides applied.

    ``defaults`` are the channels' default (key, params) from the settings; prototypes
    are built once per distinct spec. Use as the Monitor's ``plan``.
    """

    def __init__(self, defaults: dict[str, ChannelSpec], warmup_events: int, config: ModelConfig | None = None):
        self.defaults = defaults
        self.warmup_events = warmup_events
        self.config = config or ModelConfig()
        self._protos: dict[str, Detector] = {}
        self._check()

    def _proto(self, key: str, params: dict[str, Any], where: str) -> Detector:
        cache_key = repr((key, sorted(params.items())))
        if cache_key not in self._protos:
            try:
                self._protos[cache_key] = make_detector(key, params)
            except ConfigError as exc:
                raise ConfigError(f"model config {where}: {exc}") from exc
        return self._protos[cache_key]

    def _spec(self, channel: str, override: ChannelOverride | None, where: str) -> ChannelSpec:
        key, params = self.defaults[channel]
        if override is None:
            return key, params
        if override.detector is not None:
            if override.detector not in DETECTORS:
                raise ConfigError(f"model config {where}.detector: {UnknownKeyError('detector', override.detector, list(DETECTORS))}")
            if override.detector != key:
                key, params = override.detector, {}
        extra = override.params
        valid = detector_params(key)
        for name in extra:
            if name not in valid:
                raise ConfigError(
                    f"model config {where}: unknown key {name!r} for detector {key!r}; valid: "
                    f"{', '.join(sorted([*valid, *RESERVED]))}"
                )
        return key, {**params, **extra}

    def __call__(self, model: str, kind: str, feature: str | None) -> dict[str, tuple[Detector, int]] | None:
        mo = self.config.models.get(model) or self.config.models.get("*")
        name = PERFORMANCE if kind == "error" else (feature or "")
        if mo is not None and name in mo.ignore:
            return None
        fo = mo.features.get(name) if mo is not None else None
        base_warm = mo.warmup_events if mo is not None and mo.warmup_events is not None else self.warmup_events
        where = f"models.{model}.features.{name}"
        out: dict[str, tuple[Detector, int]] = {}
        for channel, _ in GROUP_CHANNELS[kind]:
            if channel not in self.defaults:
                continue
            override: ChannelOverride | None = None
            if fo is not None:
                if channel in fo.channels:
                    override = fo.channels[channel]
                    if override is None:
                        continue  # switched off
                elif channel == MAIN_CHANNEL[kind]:
                    override = fo
            at = where if override is fo else f"{where}.channels.{channel}"
            key, params = self._spec(channel, override, at)
            warm = base_warm
            if override is not None and override.warmup_events is not None:
                warm = override.warmup_events
            elif fo is not None and fo.warmup_events is not None:
                warm = fo.warmup_events
            out[channel] = (self._proto(key, params, at), warm)
        return out

    def _check(self) -> None:
        """Build every override once now, so a bad one fails at start, not on some event."""
        for model, mo in self.config.models.items():
            for name, fo in mo.features.items():
                for channel in fo.channels:
                    if channel not in CHANNEL_NAMES:
                        raise UnknownKeyError(f"channel (models.{model}.features.{name}.channels)", channel, list(CHANNEL_NAMES))
                kinds = ["label"] if name == LABEL_GROUP else ["error"] if name == PERFORMANCE else ["numeric", "categorical"]
                for kind in kinds:
                    self(model, kind, None if kind == "error" else name)
