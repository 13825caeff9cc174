"""Rebase a candidate onto a version that was promoted while it rolled out.

Two slices' selective updates of one model run side by side (their requests run in parallel,
and so do their rollouts); whichever is promoted first moves the pointer, and the other
candidate was built on the old version. Promoting it would undo the first update; rejecting it
would drop its own. When the two touch different modules, and nothing the first one changed
serves the candidate's slices (two slices' adapters: the usual case), the candidate's updated
modules are copied onto the new current version as a new version. Its predictions on the
candidate's slices are exactly the candidate's, and the incumbent's there are exactly the old
incumbent's, so the live evidence gathered so far still holds, and both updates are kept.
Anything else (a shared encoder or the trunk moved) is not rebased: the rollout ends REJECTED
as a stale parent.

The same holds the other way round: a promoted version under watch that another promotion
stacked on (:func:`follow_blocker`) is followed, and when its watch rolls it back, only its own
modules are set back to its predecessor's on top of the current version (:func:`revert`).
"""

from __future__ import annotations

from collections.abc import Sequence

from retrain_jobs.model import ALL, DEFAULT_ADAPTER
from retrain_jobs.registry import Manifest, Registry, module_digest, module_hashes


def moved_modules(old: Manifest, new: Manifest) -> set[str]:
    """Modules of ``new`` whose weights differ from ``old``'s (or that ``old`` lacks)."""
    return {n for n, spec in new.modules.items() if old.modules.get(n, {}).get("sha256") != spec["sha256"]}


def rebase_blocker(registry: Registry, model: str, candidate: str, onto: str, slices: Sequence[str]) -> str | None:
    """Why ``candidate`` cannot be rebased onto ``onto``; None when it can."""
    cand = registry.manifest(model, candidate)
    if cand.parent_version is None:
        return f"{candidate} has no parent version"
    base_old, base_new = registry.manifest(model, cand.parent_version), registry.manifest(model, onto)
    theirs = moved_modules(base_old, base_new)
    mine = moved_modules(base_old, cand) | set(cand.modules_updated)
    both = sorted(theirs & mine)
    if both:
        return f"{onto} and {candidate} both changed {both}"
    wanted = set(slices)
    serving = sorted(n for n in theirs if ALL in base_new.modules[n]["serves"] or wanted & set(base_new.modules[n]["serves"]))
    if serving:
        return f"{onto} changed {serving}, which serve(s) {sorted(wanted)}"
    return None


def own_modules(registry: Registry, model: str, version: str) -> set[str]:
    """The modules ``version`` changed against its parent (its update)."""
    m = registry.manifest(model, version)
    parent = registry.manifest(model, m.parent_version) if m.parent_version else None
    return (moved_modules(parent, m) if parent else set(m.modules)) | set(m.modules_updated)


def follow_blocker(registry: Registry, model: str, watched: str, current: str, slices: Sequence[str]) -> str | None:
    """Why a watch of ``watched`` cannot go on with ``current`` (promoted on top of it); None
    when ``current`` differs from it only in modules that are not its own and serve none of
    ``slices`` (its slices are predicted exactly as before)."""
    theirs = moved_modules(registry.manifest(model, watched), registry.manifest(model, current))
    both = sorted(theirs & own_modules(registry, model, watched))
    if both:
        return f"{current} changed {watched}'s own {both}"
    new = registry.manifest(model, current)
    wanted = set(slices)
    serving = sorted(n for n in theirs if ALL in new.modules[n]["serves"] or wanted & set(new.modules[n]["serves"]))
    return f"{current} changed {serving}, which serve(s) {sorted(wanted)}" if serving else None


def graft(registry: Registry, model: str, onto: str, source: str, modules: set[str], slices: Sequence[str],
          like: Manifest, metrics: dict) -> Manifest:
    """Save ``onto`` with ``modules`` taken from ``source`` as a new (not promoted) version whose
    request, snapshot, tier and result are ``like``'s. A slice adapter ``source`` lacks takes its
    default adapter (what served that slice there)."""
    net, _ = registry.load(model, onto)
    snet, _ = registry.load(model, source)
    for s in slices:
        if f"adapter.{s}" in modules:
            net.ensure_slice(s)
    mods, smods = net.module_map(), snet.module_map()
    for name in modules:
        mods[name].load_state_dict(smods.get(name, smods[DEFAULT_ADAPTER]).state_dict())
    net.eval()
    base, src = registry.manifest(model, onto), registry.manifest(model, source)
    for n, digest in ((n, module_digest(h)) for n, h in module_hashes(net.module_map()).items()):
        want = src.modules.get(n, src.modules[DEFAULT_ADAPTER]) if n in modules else base.modules[n]
        if digest != want["sha256"]:  # cannot happen unless the model class builds modules differently
            raise ValueError(f"graft of {sorted(modules)} from {source} onto {onto}: module {n} does not match")
    return registry.save(
        model, net, parent_version=onto, request_id=like.request_id, snapshot=like.snapshot, seeds=like.seeds,
        metrics={**{k: v for k, v in like.metrics.items() if k not in ("rebased_from", "reverted")}, **metrics},
        settings=like.settings, tier=like.tier,
        modules_updated=like.modules_updated, result={**(like.result or {}), "parent_version": onto},
    )  # fmt: skip


def rebase(registry: Registry, model: str, candidate: str, onto: str, slices: Sequence[str]) -> Manifest:
    """``candidate``'s own modules on ``onto``, as a new version (check :func:`rebase_blocker` first)."""
    cand = registry.manifest(model, candidate)
    return graft(registry, model, onto, candidate, own_modules(registry, model, candidate), slices, cand,
                 {"rebased_from": candidate})


def revert(registry: Registry, model: str, watched: str, current: str, slices: Sequence[str]) -> Manifest:
    """``current`` with ``watched``'s own modules set back to its parent's, as a new version
    (check :func:`follow_blocker` first): the rollback of ``watched`` that keeps what came after."""
    w = registry.manifest(model, watched)
    return graft(registry, model, current, w.parent_version, own_modules(registry, model, watched), slices,
                 registry.manifest(model, current), {"reverted": watched})
