"""One retrain job: a RetrainRequest and its snapshot's events in, a RetrainResult out.

Steps: split the model's labelled events (seeded hash of event_id: train / validation /
holdout), load the current version (bootstrapping one first if the model has none), score the
requested modules by the gradient of the loss on the drifted data and update the fewest carrying
most of it (:mod:`retrain_jobs.evidence`) with everything else frozen (hash-checked), gate on
the holdout (:mod:`retrain_jobs.gate`), then
save + promote (compare-and-swap on the parent) or reject. The current pointer changes only
on PROMOTED. With ``rollout_enabled`` (the default) a gate-passed version is saved but not
promoted: its decision is CANDIDATE and the rollout service judges it on live events.

Idempotent per request_id: a finished job's result is stored in the registry
(``decisions/<request_id>.json``) and returned as is on a re-run; a crash after saving the
version but before the decision finishes the promotion instead of training again. A crash
anywhere earlier leaves nothing behind but an unreferenced temp dir.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from retrain_jobs.dependency import ALL_MODULES
from retrain_jobs.evidence import choose_modules, module_scores
from retrain_jobs.features import DataError
from retrain_jobs.gate import GateConfig, gate
from retrain_jobs.model import model_class
from retrain_jobs.registry import Manifest, Registry, RegistryError
from retrain_jobs.result import retrain_result
from retrain_jobs.selective import TrainConfig, per_slice, split_events, update
from schemas.retraining import Cause
from schemas.settings import Settings

log = logging.getLogger(__name__)
MIN_REFERENCE_EVENTS = 50
MAX_REBASES = 2


def retrain_settings(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in settings.model_dump(mode="json").items() if k.startswith("retrain_")}


def labelled_events(events: Sequence[Mapping[str, Any]], model: str) -> list[Mapping[str, Any]]:
    return [e for e in events if e.get("model") == model and e.get("label") is not None]


def onset_time(events: Sequence[Mapping[str, Any]], slices: Sequence[str]) -> int | None:
    """Event time (epoch ms) the request's drifted data starts at: the earliest event of its
    slices in its snapshot, which the router starts at the estimated onset. None if it has none."""
    wanted = set(slices)
    return min((int(e["event_time"]) for e in events if e["slice"] in wanted), default=None)


def snapshot_reference(events: Sequence[Mapping[str, Any]], slices: Sequence[str]) -> list[Mapping[str, Any]]:
    """What a model with no version is fitted on when the request's own snapshot is all there
    is: its events older than the drift onset (:func:`onset_time`; other partitions' ranges
    may reach back further); else the other slices' events; else the alerted slices' earliest
    half. The first of these with at least :data:`MIN_REFERENCE_EVENTS` events."""
    onset = onset_time(events, slices)
    before = [e for e in events if onset is not None and e["event_time"] < onset]
    if len(before) >= MIN_REFERENCE_EVENTS:
        return before
    alerted = set(slices)
    others = [e for e in events if e["slice"] not in alerted]
    if len(others) >= MIN_REFERENCE_EVENTS:
        return others
    ordered = sorted(events, key=lambda e: (e["event_time"], e["event_id"]))
    return ordered[: len(ordered) // 2]


def bootstrap(
    model: str,
    events: Sequence[Mapping[str, Any]],
    registry: Registry,
    settings: Settings,
    *,
    snapshot: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> Manifest:
    """Fit every module of a new model on ``events`` and register + promote it as a version."""
    torch.set_num_threads(settings.retrain_threads)
    labelled = labelled_events(events, model)
    if not labelled:
        raise DataError(f"no labelled events of model {model!r} to bootstrap from")
    train, val, hold = split_events(labelled, settings.retrain_holdout_share, settings.retrain_val_share,
                                    settings.retrain_seed)
    cls = model_class(settings.retrain_model_class)
    net = cls.fit_new(train + val, {}, seed=settings.retrain_seed)
    stats = update(net, list(net.module_map()), train, val, TrainConfig.bootstrap(settings))
    net.eval()
    metrics = {
        "metric_name": settings.retrain_metric,
        "holdout": per_slice(net, hold, settings.retrain_metric) if hold else {},
        "train_events": len(train),
        "val_events": len(val),
        "holdout_events": len(hold),
        "train_seconds": stats.train_seconds,
        "epochs": stats.epochs,
    }
    parent = registry.current_version(model)
    manifest = registry.save(
        model, net, parent_version=parent, request_id=request_id, snapshot=snapshot,
        seeds={"split": settings.retrain_seed, "torch": settings.retrain_seed}, metrics=metrics,
        settings=retrain_settings(settings), tier="FULL", modules_updated=sorted(net.module_map()),
    )
    registry.promote(model, manifest.version, expect_current=parent)
    log.info("bootstrapped %s %s on %d events", model, manifest.version, len(train) + len(val))
    return manifest


def bootstrap_for(request: Mapping[str, Any], events: Sequence[Mapping[str, Any]], registry: Registry,
                  settings: Settings, snapshot: dict[str, Any]) -> None:
    """:func:`bootstrap` the request's model, unless another job bootstrapped it first (its
    promotion then fails the compare-and-swap and that version is used)."""
    model = request["model"]
    try:
        bootstrap(model, events, registry, settings, snapshot=snapshot,
                  request_id=f"bootstrap:{request['request_id']}")
    except RegistryError:
        if registry.current(model) is None:
            raise
        log.info("%s: another job bootstrapped it first; using that version", model)


def _promote_saved(registry: Registry, manifest: Manifest) -> dict[str, Any] | None:
    """Promote a saved version (compare-and-swap on its parent) and record the decision; its
    result, or None when another job's promotion came first. A CANDIDATE is not promoted."""
    result = dict(manifest.result or {})
    if result.get("decision") != "CANDIDATE":
        try:
            registry.promote(manifest.model, manifest.version, expect_current=manifest.parent_version)
        except RegistryError:
            return None
    registry.record_decision(manifest.model, result["request_id"], result)
    return result


def _finish_saved(registry: Registry, manifest: Manifest) -> dict[str, Any]:
    """A version was saved for this request but the job stopped before recording a decision."""
    result = _promote_saved(registry, manifest)
    if result is None:
        result = {**(manifest.result or {}), "decision": "REJECTED", "cause": Cause.STALE_PARENT.value,
                  "reason": f"stale parent: current moved away from {manifest.parent_version} before the promotion"}
        registry.record_decision(manifest.model, result["request_id"], result)
    return result


def _resolve_targets(net: Any, modules: Sequence[str], slices: Sequence[str]) -> list[str]:
    if ALL_MODULES in modules:
        return sorted(net.module_map())
    for s in slices:  # a slice new to the model gets its own adapter, copied from the default
        if f"adapter.{s}" in modules:
            net.ensure_slice(s)
    known = net.module_map()
    unknown = sorted(set(modules) - set(known))
    if unknown:
        raise DataError(f"unknown module(s) {unknown}; the model has {sorted(known)}")
    return sorted(modules)


def run_job(request: Mapping[str, Any], events: Sequence[Mapping[str, Any]], registry: Registry,
            settings: Settings) -> dict[str, Any]:
    """Run one RetrainRequest on its snapshot's events; a RetrainResult record dict."""
    torch.set_num_threads(settings.retrain_threads)
    model, rid = request["model"], request["request_id"]
    done = registry.decision(model, rid)
    if done is not None:
        return done
    saved = registry.find_request(model, rid)
    if saved is not None and saved.result is not None:
        return _finish_saved(registry, saved)

    snapshot = request.get("snapshot") or {}
    slices = list(request.get("slices") or snapshot.get("slice_filter") or [])
    metric = settings.retrain_metric
    try:
        labelled = labelled_events(events, model)
        if not labelled:
            raise DataError(f"the snapshot holds no labelled events of model {model!r}")
        train, val, hold = split_events(labelled, settings.retrain_holdout_share, settings.retrain_val_share,
                                        settings.retrain_seed)
        if registry.current(model) is None:  # no reference data reached the worker: the snapshot's own
            bootstrap_for(request, snapshot_reference(train + val, slices), registry, settings, dict(snapshot))
        if request["tier"] == "FULL":
            train_t, val_t = train, val
        else:
            train_t = [e for e in train if e["slice"] in slices]
            val_t = [e for e in val if e["slice"] in slices]
        for attempt in range(MAX_REBASES + 1):  # another job promoted meanwhile: redo on its version
            net, manifest = registry.load(model)
            before_net = copy.deepcopy(net)
            allowed = _resolve_targets(net, list(request.get("modules") or []), slices)
            if not allowed:
                raise DataError("the request names no modules")
            scores = module_scores(net, allowed, train_t)  # the evidence: which allowed modules carry the loss
            targets = allowed if request["tier"] == "FULL" else choose_modules(  # FULL: every module, as asked
                scores, settings.retrain_module_evidence_share)
            stats = update(net, targets, train_t, val_t, TrainConfig.incremental(settings))
            net.eval()
            verdict = gate(before_net, net, hold, slices, GateConfig.from_settings(settings))
            result = retrain_result(
                request,
                parent_version=manifest.version,
                slices=slices,
                modules_updated=stats.modules,
                params_updated=stats.params_updated,
                params_total=stats.params_total,
                train_seconds=stats.train_seconds,
                metric_name=metric,
                metric_before=verdict.metric_before,
                metric_after=verdict.metric_after,
                other_slices_max_regression=verdict.other_slices_max_regression,
                latency_ms=verdict.latency_ms,
                decision=("CANDIDATE" if settings.rollout_enabled else "PROMOTED") if verdict.passed else "REJECTED",
                reason=verdict.reason,
                cause=verdict.cause.value,
                module_scores=scores,
                checks=verdict.checks,
            )
            if registry.current_version(model) != manifest.version:
                log.info("%s: current moved from %s while job %s ran; redoing it (attempt %d)",
                         model, manifest.version, rid, attempt + 2)
                continue
            if not verdict.passed:
                break
            promoted = _promote_saved(registry, _save(registry, request, net, manifest, snapshot, stats, verdict,
                                                      result, settings))
            if promoted is not None:
                return promoted
            log.info("%s: another job promoted first; redoing %s on the new current version", model, rid)
        else:
            result.update(decision="REJECTED", new_version=None, artifact_uri=None, cause=Cause.STALE_PARENT.value,
                          reason=f"stale parent: the current version moved {MAX_REBASES + 1} times while it ran")
    except DataError as exc:
        result = retrain_result(request, metric_name=metric, cause=Cause.DATA.value, reason=f"data: {exc}")
    registry.record_decision(model, rid, result)
    return result


def _save(registry: Registry, request: Mapping[str, Any], net: Any, parent: Manifest, snapshot: Mapping[str, Any],
          stats: Any, verdict: Any, result: dict[str, Any], settings: Settings) -> Manifest:
    """Save the gate-passed update as a new (not yet promoted) version carrying its result."""
    metrics = {
        "metric_name": settings.retrain_metric,
        "holdout_before": verdict.slices_before,
        "holdout": verdict.slices_after,
        "train_events": stats.train_events,
        "epochs": stats.epochs,
        "cached_embeddings": stats.cached_embeddings,
        "train_seconds": stats.train_seconds,
        "module_scores": dict(result.get("module_scores") or {}),
        "gate_checks": dict(result.get("checks") or {}),
    }
    return registry.save(
        parent.model, net, parent_version=parent.version, request_id=request["request_id"],
        snapshot=dict(snapshot), seeds={"split": settings.retrain_seed, "torch": settings.retrain_seed},
        metrics=metrics, settings=retrain_settings(settings), tier=request["tier"], modules_updated=stats.modules,
        result=result,
    )
