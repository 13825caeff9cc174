"""The registry side of the rollout service's decisions, when other versions moved meanwhile.

Two slices' rollouts of one model overlap: the first promoted moves the pointer under the
second. :class:`RegistrySide` keeps both updates where the modules allow
(:mod:`retrain_jobs.rebase`): a candidate is rebased onto the new current version, a watch
follows a version promoted on top of it, and a watch's rollback sets back only its own modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from retrain_jobs.rebase import follow_blocker, rebase, rebase_blocker, revert
from retrain_jobs.registry import Registry, RegistryError
from retrain_jobs.rollout_store import MODELS, RolloutState, model_update, stage_update

log = logging.getLogger(__name__)


class RegistrySide:
    def __init__(self, registry: Registry, clock: Callable[[], float],
                 emit: Callable[[RolloutState, str, dict], None]):  # fmt: skip
        self.registry, self.clock, self.emit = registry, clock, emit

    def pointer_updates(self, last_update: Mapping[str, dict], skip: set[str]) -> list[dict]:
        """ModelUpdates for every registry pointer the models topic does not show (``last_update``:
        the latest record per model): a bootstrap, a promotion with the rollout off, a manual
        rollback (ROLLED_BACK when the pointer went back to the shown version's parent)."""
        out, now_ms = [], int(self.clock() * 1000)
        for model in self.registry.models():
            current = self.registry.current_version(model)
            last = last_update.get(model)
            if current is None or model in skip or (last is not None and last.get("current_version") == current):
                continue
            shown = last.get("current_version") if last else None
            rolled_back = shown is not None and self._manifest_field(model, shown, "parent_version") == current
            out.append(model_update(
                model=model, version=shown if rolled_back else current, stage="ROLLED_BACK" if rolled_back else "PROMOTED",
                current_version=current, now_ms=now_ms, previous_version=current if rolled_back else shown,
                reason=f"republished: the registry points at {current}" + (f" (was {shown})" if shown else ""),
                request_id=self._manifest_field(model, current, "request_id"),
            ))  # fmt: skip
        return out

    def _manifest_field(self, model: str, version: str, name: str) -> str | None:
        try:
            return getattr(self.registry.manifest(model, version), name)
        except RegistryError:
            return None

    def rebase(self, st: RolloutState, onto: str) -> bool:
        """Carry the rollout over to its candidate rebased onto ``onto`` (a version promoted
        meanwhile), when :mod:`retrain_jobs.rebase` allows; True if it did."""
        r = st.rollout
        try:
            blocker = rebase_blocker(self.registry, r.model, r.candidate, onto, r.slices)
            if blocker is not None:
                log.info("rollout %s: not rebasing onto %s: %s", r.request_id, onto, blocker)
                return False
            manifest = rebase(self.registry, r.model, r.candidate, onto, r.slices)
        except Exception:  # falls back to a stale-parent rejection; never stops the service
            log.exception("rollout %s: rebase onto %s failed", r.request_id, onto)
            return False
        reason = f"rebased: {r.candidate}'s modules on {onto} (promoted meanwhile) as {manifest.version}"
        log.info("rollout %s: %s", r.request_id, reason)
        r.rebase(onto, manifest.version, reason)
        st.result = {**st.result, "new_version": manifest.version, "parent_version": onto,
                     "artifact_uri": self.registry.artifact_uri(r.model, manifest.version)}  # fmt: skip
        if r.phase in ("SHADOW", "CANARY"):  # serving handles follow the new candidate
            self.emit(st, MODELS, stage_update(r, r.phase, onto, int(self.clock() * 1000), reason=reason))
        return True

    def follows(self, st: RolloutState, current: str) -> bool:
        r = st.rollout
        try:
            blocker = follow_blocker(self.registry, r.model, r.candidate, current, r.slices)
        except Exception:
            log.exception("rollout %s: cannot compare %s with %s", r.request_id, r.candidate, current)
            return False
        if blocker is not None:
            log.info("rollout %s: the watch cannot follow %s: %s", r.request_id, current, blocker)
        return blocker is None

    def roll_back(self, st: RolloutState) -> str:
        """Undo the watched version: the pointer back to its incumbent, or, when another version
        was promoted on top of it, that version with the watched one's own modules set back."""
        r = st.rollout
        current = self.registry.current_version(r.model)
        if current == r.candidate:
            self.registry.rollback(r.model, to=r.incumbent, expect_current=r.candidate)
            return f"pointer back to {r.incumbent}"
        if current is not None and current != r.incumbent and self.follows(st, current):
            m = revert(self.registry, r.model, r.candidate, current, r.slices)
            self.registry.promote(r.model, m.version, expect_current=current)
            return f"{r.candidate}'s own modules set back to {r.incumbent}'s on {current} as {m.version}"
        if current != r.incumbent:  # the regression is real and cannot be isolated: safety first
            self.registry.rollback(r.model, to=r.incumbent)
            return f"pointer back to {r.incumbent} (from {current}, which was built on {r.candidate})"
        return f"already at {r.incumbent}"
