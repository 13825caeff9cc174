"""Which of the allowed modules to update: the ones the drifted data's loss pulls on.

The dependency map (:mod:`retrain_jobs.dependency`) says which modules an alert may touch; the
gradient of the loss on the drifted data says which of them carry it. One backward pass of the
mean binary cross-entropy over the request's training events gives every parameter's gradient;
a module's score is its mean squared gradient per parameter (the squared gradient is the
Fisher diagonal's one-batch estimate, averaged over the module so a large module does not win
by size alone), normalised to shares that sum to 1. The update takes the fewest modules, highest
score first, whose shares reach ``share`` (ties broken by name: deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from retrain_jobs.features import binary_labels


def module_scores(net: nn.Module, candidates: Sequence[str], events: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Share of the gradient evidence per candidate module on ``events`` (one backward pass;
    the weights are not changed). Equal shares when there is no gradient at all."""
    mods = net.module_map()
    if not candidates:
        return {}
    if not events:
        return {m: 1.0 / len(candidates) for m in candidates}
    was_training = net.training
    net.eval()
    wanted = {id(p) for m in candidates for p in mods[m].parameters()}
    saved = {id(p): p.requires_grad for p in net.parameters()}
    for p in net.parameters():
        p.requires_grad_(id(p) in wanted)
        p.grad = None
    try:
        prep = net.prepare(events)
        loss = nn.functional.binary_cross_entropy_with_logits(net(prep.inputs, prep.slices), binary_labels(events))
        loss.backward()
        raw = {}
        for m in candidates:
            params = list(mods[m].parameters())
            n = sum(p.numel() for p in params)
            sq = sum(float((p.grad**2).sum()) for p in params if p.grad is not None)
            raw[m] = sq / n if n else 0.0
    finally:
        for p in net.parameters():
            p.grad = None
            p.requires_grad_(saved[id(p)])
        net.train(was_training)
    total = sum(raw.values())
    if total <= 0 or not torch.isfinite(torch.tensor(total)):
        return {m: 1.0 / len(candidates) for m in candidates}
    return {m: raw[m] / total for m in candidates}


def choose_modules(scores: Mapping[str, float], share: float) -> list[str]:
    """The fewest modules, highest score first, whose scores sum to at least ``share``."""
    chosen, carried = [], 0.0
    for name, score in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
        chosen.append(name)
        carried += score
        if carried >= share - 1e-12:
            break
    return sorted(chosen)
