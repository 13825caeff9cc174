"""Modular models: named modules that declare what they read and whom they serve.

The retraining core works with any class that follows :class:`ModularModel`; the reference
one is :class:`TabularModularModel`. Pick one with the ``retrain_model_class`` setting: a key
of :data:`MODEL_CLASSES` or a dotted path ``package.module:Class`` (or ``package.module.Class``).

A modular model must expose:

- ``module_map() -> dict[str, nn.Module]``: every trainable part under a stable name
  (all parameters belong to exactly one named module);
- ``module_specs() -> dict[str, ModuleSpec]``: per name, the features it ``reads`` and the
  slices it ``serves`` (``("*",)`` = every slice) and whether it is a ``head`` module (runs
  after :meth:`embed`, so it can be trained on cached embeddings);
- ``prepare(events) -> Prepared``: inputs and slice routes of a list of events (fixed
  preprocessing, stored in ``config()``);
- ``embed(inputs) -> Tensor`` and ``head(embedding, route) -> Tensor`` (logits), with
  ``forward(inputs, slices) == head(embed(inputs), route(slices))``;
- ``ensure_slice(slice) -> str``: the name of the module serving that slice, created from the
  default head when the slice is new (so an update of a new slice leaves the default untouched);
- ``config() -> dict`` (JSON) and ``from_config(config)`` (architecture, preprocessing, slices),
  plus ``fit_new(events, config_overrides, seed)`` building an untrained model for bootstrap.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from retrain_jobs.features import Preprocessor
from schemas.errors import ConfigError, UnknownKeyError

DEFAULT_ADAPTER = "adapter._default"
ALL = "*"


@dataclass(frozen=True)
class ModuleSpec:
    reads: tuple[str, ...]
    serves: tuple[str, ...]
    head: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"reads": list(self.reads), "serves": list(self.serves), "head": self.head}


@dataclass
class Prepared:
    """Model inputs of a list of events: one tensor per input group and the slice of each row."""

    inputs: dict[str, torch.Tensor]
    slices: list[str]

    def __len__(self) -> int:
        return len(self.slices)


@runtime_checkable
class ModularModel(Protocol):
    def module_map(self) -> dict[str, nn.Module]: ...
    def module_specs(self) -> dict[str, ModuleSpec]: ...
    def prepare(self, events: Sequence[Mapping[str, Any]]) -> Prepared: ...
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor: ...
    def route(self, slices: Sequence[str]) -> torch.Tensor: ...
    def head(self, embedding: torch.Tensor, route: torch.Tensor) -> torch.Tensor: ...
    def forward(self, inputs: Mapping[str, torch.Tensor], slices: Sequence[str]) -> torch.Tensor: ...
    def ensure_slice(self, slice_name: str) -> str: ...
    def config(self) -> dict[str, Any]: ...


class TabularModularModel(nn.Module):
    """Reference model: feature-group encoders -> shared trunk -> per-slice adapter heads.

    ``encoder.<group>``: Linear + SiLU over the group's preprocessed columns; ``trunk``: a
    residual MLP over the concatenated encodings (the linear skip keeps every direction of the
    inputs available to the heads, which is what lets an adapter alone follow a new concept);
    ``adapter.<slice>``: a small MLP giving the slice's logit; ``adapter._default`` serves slices
    without their own adapter. Binary labels: the output is a logit.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"enc_dim": 8, "trunk_hidden": 64, "emb_dim": 32, "adapter_hidden": 16}

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self._config = {**self.DEFAULTS, **{k: v for k, v in config.items() if k != "slices"}}
        self.pre = Preprocessor.from_dict(self._config["preprocessing"])
        enc, hid, emb, ahid = (self._config[k] for k in ("enc_dim", "trunk_hidden", "emb_dim", "adapter_hidden"))
        self.groups = list(self.pre.groups)
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(self.pre.group_width(g), enc), nn.SiLU()) for g in self.groups
        )
        width = enc * len(self.groups)
        self.trunk = _Trunk(width, hid, emb)
        self.slice_names: list[str] = []  # adapters[0] is the default, adapters[i + 1] serves slice_names[i]
        self.adapters = nn.ModuleList([self._new_adapter(emb, ahid)])
        for s in config.get("slices", []):
            self.adapters.append(self._new_adapter(emb, ahid))
            self.slice_names.append(s)
        self._slice_index = {s: i + 1 for i, s in enumerate(self.slice_names)}

    @staticmethod
    def _new_adapter(emb: int, hidden: int) -> nn.Module:
        return nn.Sequential(nn.Linear(emb, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    # --- construction --------------------------------------------------------------
    @classmethod
    def fit_new(
        cls, events: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any] | None = None, seed: int = 0
    ) -> TabularModularModel:
        """An untrained model with preprocessing fitted on ``events`` and one adapter per slice."""
        overrides = dict(overrides or {})
        pre = Preprocessor.fit(events, groups=overrides.pop("groups", None))
        slices = sorted({e["slice"] for e in events})
        torch.manual_seed(seed)
        return cls({**overrides, "preprocessing": pre.to_dict(), "slices": slices})

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TabularModularModel:
        return cls(config)

    def config(self) -> dict[str, Any]:
        return copy.deepcopy({**self._config, "slices": list(self.slice_names)})

    # --- modules -----------------------------------------------------------------------
    def module_map(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {f"encoder.{g}": m for g, m in zip(self.groups, self.encoders)}
        out["trunk"] = self.trunk
        out[DEFAULT_ADAPTER] = self.adapters[0]
        for s in self.slice_names:
            out[f"adapter.{s}"] = self.adapters[self._slice_index[s]]
        return out

    def module_specs(self) -> dict[str, ModuleSpec]:
        every = tuple(sorted(f for fs in self.pre.groups.values() for f in fs))
        specs = {f"encoder.{g}": ModuleSpec(tuple(self.pre.groups[g]), (ALL,)) for g in self.groups}
        specs["trunk"] = ModuleSpec(every, (ALL,))
        specs[DEFAULT_ADAPTER] = ModuleSpec(every, (ALL,), head=True)
        for s in self.slice_names:
            specs[f"adapter.{s}"] = ModuleSpec(every, (s,), head=True)
        return specs

    def ensure_slice(self, slice_name: str) -> str:
        if slice_name not in self._slice_index:
            self.adapters.append(copy.deepcopy(self.adapters[0]))
            self.slice_names.append(slice_name)
            self._slice_index[slice_name] = len(self.adapters) - 1
        return f"adapter.{slice_name}"

    # --- computation ---------------------------------------------------------------------
    def prepare(self, events: Sequence[Mapping[str, Any]]) -> Prepared:
        return Prepared(self.pre.transform(events), [e["slice"] for e in events])

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.trunk(torch.cat([enc(inputs[g]) for g, enc in zip(self.groups, self.encoders)], dim=1))

    def route(self, slices: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self._slice_index.get(s, 0) for s in slices], dtype=torch.long)

    def head(self, embedding: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        ids = torch.unique(route)
        if len(ids) == 1:
            return self.adapters[int(ids[0])](embedding).squeeze(1)
        out = embedding.new_zeros(embedding.shape[0])
        for i in ids.tolist():
            rows = (route == i).nonzero(as_tuple=True)[0]
            out = out.index_put((rows,), self.adapters[i](embedding[rows]).squeeze(1))
        return out

    def forward(self, inputs: Mapping[str, torch.Tensor], slices: Sequence[str]) -> torch.Tensor:
        return self.head(self.embed(inputs), self.route(slices))


class _Trunk(nn.Module):
    def __init__(self, width: int, hidden: int, emb: int):
        super().__init__()
        self.skip = nn.Linear(width, emb)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, emb))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.mlp(x)


MODEL_CLASSES: dict[str, type] = {"tabular": TabularModularModel}


def model_class(key: str) -> type:
    """A registered key or a dotted path ``pkg.mod:Class`` / ``pkg.mod.Class``."""
    if key in MODEL_CLASSES:
        return MODEL_CLASSES[key]
    if ":" not in key and "." not in key:
        raise UnknownKeyError("retrain model class", key, list(MODEL_CLASSES))
    mod_name, _, cls_name = key.partition(":") if ":" in key else key.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"retrain_model_class {key!r}: cannot import ({exc}); use one of {sorted(MODEL_CLASSES)} "
            "or a dotted path pkg.module:Class"
        ) from exc
    missing = [m for m in ("module_map", "module_specs", "prepare", "embed", "head", "route", "ensure_slice",
                           "config", "from_config", "fit_new") if not hasattr(cls, m)]
    if missing:
        raise ConfigError(f"retrain_model_class {key!r} is not a modular model: missing {missing}")
    return cls


def class_path(cls: type) -> str:
    for key, registered in MODEL_CLASSES.items():
        if registered is cls:
            return key
    return f"{cls.__module__}:{cls.__qualname__}"


def count_params(modules: Mapping[str, nn.Module], names: Sequence[str] | None = None) -> int:
    return sum(p.numel() for n, m in modules.items() if names is None or n in names for p in m.parameters())
