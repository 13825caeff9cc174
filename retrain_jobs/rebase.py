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
"""

from __future__ import annotations

from collections.abc import Sequence

from retrain_jobs.model import ALL
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


def rebase(registry: Registry, model: str, candidate: str, onto: str, slices: Sequence[str]) -> Manifest:
    """Save ``onto`` with ``candidate``'s own modules as a new (not promoted) version; check
    :func:`rebase_blocker` first. The manifest keeps the candidate's request, snapshot and result."""
    cand = registry.manifest(model, candidate)
    mine = moved_modules(registry.manifest(model, cand.parent_version), cand) | set(cand.modules_updated)
    net, _ = registry.load(model, onto)
    cnet, _ = registry.load(model, candidate)
    for s in slices:
        if f"adapter.{s}" in cnet.module_map():
            net.ensure_slice(s)
    mods, cmods = net.module_map(), cnet.module_map()
    for name in mine:
        mods[name].load_state_dict(cmods[name].state_dict())
    got = {n: module_digest(h) for n, h in module_hashes(net.module_map()).items()}
    base = registry.manifest(model, onto)
    for n, digest in got.items():
        want = cand.modules[n]["sha256"] if n in mine else base.modules[n]["sha256"]
        if digest != want:  # cannot happen unless the model class builds modules differently
            raise ValueError(f"rebase of {candidate} onto {onto}: module {n} does not match its source")
    net.eval()
    result = {**(cand.result or {}), "parent_version": onto}
    return registry.save(
        model, net, parent_version=onto, request_id=cand.request_id, snapshot=cand.snapshot, seeds=cand.seeds,
        metrics={**cand.metrics, "rebased_from": candidate}, settings=cand.settings, tier=cand.tier,
        modules_updated=cand.modules_updated, result=result,
    )  # fmt: skip
