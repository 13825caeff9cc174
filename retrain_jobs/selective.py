"""Selective update: freeze everything outside the target modules, update the rest
incrementally, and measure it on held-out data (the gate itself: :mod:`retrain_jobs.gate`).

Why it is cheap: when every target is a head module (the slice adapters), the frozen
upstream (encoders + trunk) runs once under ``no_grad`` and the adapters train on the cached
embeddings of the alerted slices' events only. Otherwise the frozen modules still run
forward each step, but get no gradients and no optimiser state.

Incremental: small learning rate, an L2 penalty toward the previous weights, early stopping
on a validation split (best epoch restored). Everything seeded: a job is reproducible.
"""

from __future__ import annotations

import copy
import hashlib
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from retrain_jobs.features import DataError, binary_labels
from retrain_jobs.model import count_params
from retrain_jobs.registry import module_hashes
from schemas.errors import DriftError
from schemas.settings import Settings


class IntegrityError(DriftError):
    """A module that had to stay frozen changed during an update."""


# --- splits ------------------------------------------------------------------------------
def _unit(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def split_events(
    events: Sequence[Mapping[str, Any]], holdout_share: float, val_share: float, seed: int
) -> tuple[list, list, list]:
    """(train, validation, holdout) by a seeded hash of event_id: independent of event order."""
    train, val, hold = [], [], []
    for e in events:
        key = f"{seed}:{e['event_id']}"
        if _unit("holdout:" + key) < holdout_share:
            hold.append(e)
        elif _unit("val:" + key) < val_share:
            val.append(e)
        else:
            train.append(e)
    return train, val, hold


# --- metrics -----------------------------------------------------------------------------
def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with tied scores counted half; 0.5 when one class is absent."""
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return 0.5
    ranks = rankdata(p)  # ties get their average rank
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p >= 0.5) == (y >= 0.5)))


METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], bool]] = {
    "log_loss": (log_loss, False),  # (function, higher is better)
    "auc": (auc, True),
    "accuracy": (accuracy, True),
}


def gain(metric: str, before: float, after: float) -> float:
    """Improvement in the metric's good direction (negative = worse)."""
    return after - before if METRICS[metric][1] else before - after


# --- training --------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    lr: float
    epochs: int
    batch_size: int
    patience: int
    l2_prev: float
    seed: int

    @classmethod
    def incremental(cls, s: Settings) -> TrainConfig:
        return cls(s.retrain_lr, s.retrain_epochs, s.retrain_batch_size, s.retrain_patience, s.retrain_l2_prev,
                   s.retrain_seed)

    @classmethod
    def bootstrap(cls, s: Settings) -> TrainConfig:
        return cls(s.retrain_bootstrap_lr, s.retrain_bootstrap_epochs, s.retrain_batch_size, s.retrain_patience,
                   0.0, s.retrain_seed)


@dataclass
class UpdateStats:
    modules: list[str]
    params_updated: int
    params_total: int
    train_seconds: float
    epochs: int
    best_val_loss: float
    cached_embeddings: bool
    frozen_hashes_equal: bool = True
    train_events: int = 0
    cpu_seconds: float = 0.0  # CPU time of the calling thread (torch runs on it with one thread)
    extra: dict[str, Any] = field(default_factory=dict)


def _select(inputs: Mapping[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {g: t[idx] for g, t in inputs.items()}


def update(
    net: nn.Module,
    targets: Sequence[str],
    train_events: Sequence[Mapping[str, Any]],
    val_events: Sequence[Mapping[str, Any]],
    cfg: TrainConfig,
) -> UpdateStats:
    """Train only ``targets`` of ``net`` in place; every other module must stay bit-identical.

    Raises :class:`IntegrityError` if a frozen tensor's sha256 changed, :class:`DataError`
    when there is nothing to train on.
    """
    mods = net.module_map()
    unknown = sorted(set(targets) - set(mods))
    if unknown:
        raise DataError(f"unknown module(s) {unknown}; the model has {sorted(mods)}")
    if not train_events:
        raise DataError("no labelled training events for the target slices")
    frozen = {n: m for n, m in mods.items() if n not in targets}
    before = module_hashes(frozen)
    started, cpu_started = time.perf_counter(), time.thread_time()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    for m in mods.values():
        m.requires_grad_(False)
    for name in targets:
        mods[name].requires_grad_(True)
    params = [p for n in targets for p in mods[n].parameters()]
    anchor = [p.detach().clone() for p in params]
    specs = net.module_specs()
    cached = all(specs[n].head for n in targets)

    def batches_of(events: Sequence[Mapping[str, Any]]):
        prep = net.prepare(events)
        y = binary_labels(events)
        route = net.route(prep.slices)
        if cached:
            with torch.no_grad():
                emb = net.embed(prep.inputs)
            return (lambda idx: net.head(emb[idx], route[idx])), y
        return (lambda idx: net.head(net.embed(_select(prep.inputs, idx)), route[idx])), y

    train_logits, y_train = batches_of(train_events)
    if val_events:
        val_logits, y_val = batches_of(val_events)
    else:
        val_logits, y_val = train_logits, y_train
    opt = torch.optim.Adam(params, lr=cfg.lr)
    bce = nn.BCEWithLogitsLoss()
    n = len(y_train)
    all_val = torch.arange(len(y_val))

    def val_loss() -> float:
        with torch.no_grad():
            return float(bce(val_logits(all_val), y_val))

    best, best_state, stale, epochs = val_loss(), _state(mods, targets), 0, 0
    for epoch in range(cfg.epochs):
        epochs = epoch + 1
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = bce(train_logits(idx), y_train[idx])
            if cfg.l2_prev:
                loss = loss + cfg.l2_prev * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        current = val_loss()
        if current < best - 1e-6:
            best, best_state, stale = current, _state(mods, targets), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    for name in targets:
        mods[name].load_state_dict(best_state[name])
    seconds, cpu_seconds = time.perf_counter() - started, time.thread_time() - cpu_started
    for m in mods.values():
        m.requires_grad_(True)
    after = module_hashes(frozen)
    changed = sorted(n for n in frozen if after[n] != before[n])
    if changed:
        raise IntegrityError(f"frozen module(s) {changed} changed during the update of {sorted(targets)}")
    return UpdateStats(
        modules=sorted(targets),
        params_updated=count_params(mods, targets),
        params_total=count_params(mods),
        train_seconds=seconds,
        epochs=epochs,
        best_val_loss=best,
        cached_embeddings=cached,
        train_events=n,
        cpu_seconds=cpu_seconds,
    )


def _state(mods: Mapping[str, nn.Module], names: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    return {n: copy.deepcopy(mods[n].state_dict()) for n in names}


# --- evaluation (the gate is retrain_jobs/gate.py) -------------------------------------------------------------------
def predict(net: nn.Module, events: Sequence[Mapping[str, Any]]) -> np.ndarray:
    with torch.no_grad():
        prep = net.prepare(events)
        return torch.sigmoid(net(prep.inputs, prep.slices)).numpy().astype(np.float64)


def per_slice(net: nn.Module, events: Sequence[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """The metric of every slice in ``events``, each slice evaluated on its own (deterministic)."""
    by_slice: dict[str, list] = defaultdict(list)
    for e in events:
        by_slice[e["slice"]].append(e)
    fn = METRICS[metric][0]
    return {s: fn(binary_labels(evs).numpy(), predict(net, evs)) for s, evs in sorted(by_slice.items())}


def pooled(net: nn.Module, events: Sequence[Mapping[str, Any]], metric: str) -> float:
    return METRICS[metric][0](binary_labels(events).numpy(), predict(net, events)) if events else math.nan


def latency_ms(net: nn.Module, events: Sequence[Mapping[str, Any]], batch: int, repeats: int = 5) -> float:
    """Median milliseconds to preprocess and score one batch of ``batch`` events."""
    if not events:
        return 0.0
    sample = [events[i % len(events)] for i in range(batch)]
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            prep = net.prepare(sample)
            net(prep.inputs, prep.slices)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
