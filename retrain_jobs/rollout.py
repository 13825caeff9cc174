"""The release of one candidate version, as a pure state machine: paired losses in, stage changes out.

No I/O, no clock: :mod:`retrain_jobs.rollout_service` feeds it and acts on what it returns.
The input is one pair per labelled event of the candidate's slices that arrived after its
training snapshot: the per-event log loss of the incumbent and of the candidate on that
event. Stages (``phase``)::

    CANDIDATE --start--> SHADOW --better--> CANARY --no harm--> WATCH --no harm--> PROMOTED (kept)
                           |  \\--worse / undecided--> REJECTED        |             \\--harm--> ROLLED_BACK
                           \\--(canary off)--> WATCH          CANARY --harm--> ROLLED_BACK

WATCH is stage PROMOTED (the registry pointer names the candidate) while it is still compared
with its predecessor.

The test (one kind everywhere): an anytime-valid **betting e-process** on the clipped, scaled
paired difference ``x_t = (min(l_inc, C) - min(l_cand, C)) / C`` in [-1, 1] (C =
``rollout_loss_clip``). To test ``H0: E[x_t | past] <= m`` the wealth of each bet
``lambda_j`` (a fixed grid, scaled by 1/(1+m) so a factor never reaches 0) is
``prod_t (1 + lambda_j (x_t - m))``; the e-value is their average. Under H0 each product (and
so the average) is a non-negative supermartingale with mean <= 1, and Ville's inequality gives
``P(sup_t e_t >= 1/alpha) <= alpha``: the error rate holds at every stopping time, whenever the
test is looked at, even when the events are not identically distributed (only the
conditional mean matters). Guarantees, with the defaults:

- **shadow**: PROMOTE-side test ``H0: mean gain <= rollout_min_improvement`` (in loss units);
  rejecting it moves on to the canary. P(false promotion) <= ``rollout_alpha`` (0.05) for a
  candidate no better than the incumbent. A harm test ``H0: candidate not worse`` runs beside
  it at ``rollout_harm_alpha``; rejecting it (the candidate is significantly worse) is an
  early REJECTED. After ``rollout_max_shadow_events`` paired events with neither, REJECTED
  (undecided: not shown better).
- **canary**: the candidate serves ``rollout_canary_fraction`` of its slices' events
  (:func:`retrain_jobs.routing.serves_candidate`); a fresh harm detector on every paired event
  of the canary (:class:`RestartingTest`: a betting test restarted every
  ``rollout_restart_events`` events, each at alpha / restarts, so a regression that begins
  late is not averaged away by early good events). Rejecting it is ROLLED_BACK (the canary is withdrawn, the pointer never moved);
  ``rollout_canary_events`` events without that promote. The regret paid is the candidate's
  extra loss summed over the events it served.
- **watch**: after the pointer swap, a fresh restarting harm detector ``H0: loss increase <=
  rollout_watch_tolerance`` for ``rollout_watch_events`` events; rejecting it rolls back. P(rolling back a version that is
  within tolerance) <= ``rollout_harm_alpha``.

Every transition carries the deciding e-value as ``statistic``, the events it rests on, and
the numbers (``checks``) behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from retrain_jobs.routing import serves_candidate
from retrain_jobs.sequential import BettingTest, RestartingTest, SequentialTestError
from schemas.retraining import Cause
from schemas.settings import section

STAGES = ("CANDIDATE", "SHADOW", "CANARY", "PROMOTED", "REJECTED", "ROLLED_BACK")
PHASES = ("CANDIDATE", "SHADOW", "CANARY", "WATCH", "PROMOTED", "REJECTED", "ROLLED_BACK")
FINAL_PHASES = frozenset({"PROMOTED", "REJECTED", "ROLLED_BACK"})

# typed causes (RetrainResult.cause, schemas/retraining.py); the router knows a live rollout's result by them
CAUSE_SHADOW_STARTED = Cause.ROLLOUT_SHADOW_STARTED.value
CAUSE_SHADOW_WON = Cause.ROLLOUT_SHADOW_WON.value
CAUSE_SHADOW_LOST = Cause.ROLLOUT_SHADOW_LOST.value
CAUSE_SHADOW_UNDECIDED = Cause.ROLLOUT_SHADOW_UNDECIDED.value
CAUSE_CANARY_PASSED = Cause.ROLLOUT_CANARY_PASSED.value
CAUSE_CANARY_REGRESSED = Cause.ROLLOUT_CANARY_REGRESSED.value
CAUSE_WATCH_PASSED = Cause.ROLLOUT_WATCH_PASSED.value
CAUSE_WATCH_REGRESSED = Cause.ROLLOUT_WATCH_REGRESSED.value
CAUSE_STALE_PARENT = Cause.ROLLOUT_STALE_PARENT.value
CAUSE_REGISTRY_MOVED = Cause.ROLLOUT_REGISTRY_MOVED.value


class RolloutError(SequentialTestError):
    """A rollout was driven out of order (an observation after its end, an unknown phase)."""


@dataclass(frozen=True)
class RolloutConfig:
    """The rollout's settings (defaults live in :class:`~schemas.settings.Settings`)."""

    alpha: float = 0.05
    harm_alpha: float = 0.05
    loss_clip: float = 3.0
    min_improvement: float = 0.0
    max_shadow_events: int = 3000
    canary_fraction: float = 0.10
    canary_events: int = 500
    watch_events: int = 1000
    watch_tolerance: float = 0.02
    restart_events: int = 50

    def __post_init__(self) -> None:
        for name in ("min_improvement", "watch_tolerance"):
            if not 0 <= getattr(self, name) < self.loss_clip:
                raise RolloutError(f"rollout {name} {getattr(self, name)} must be in [0, loss_clip={self.loss_clip})")

    @classmethod
    def from_settings(cls, settings: Any) -> RolloutConfig:
        return section(settings, "rollout_", cls)


@dataclass(frozen=True)
class Transition:
    """A stage change the service acts on. ``kind`` is the phase entered (WATCH_PASSED when a
    watch ends without harm); ``decision`` is set when the rollout's outcome is decided."""

    kind: str
    stage: str
    decision: str | None
    cause: str
    reason: str
    statistic: float
    events: int
    checks: dict[str, float]
    candidate_loss: float | None = None  # mean live log loss of the candidate over the phase's events
    incumbent_loss: float | None = None  # ... of the incumbent (in WATCH: the predecessor) on the same events


@dataclass
class Rollout:
    """One candidate's release; see the module docstring. ``observe`` per paired event."""

    config: RolloutConfig
    model: str
    candidate: str
    incumbent: str
    slices: list[str]
    request_id: str
    phase: str = "CANDIDATE"
    events: int = 0  # paired events observed since SHADOW began
    phase_events: int = 0  # ... in the current phase
    phase_loss_incumbent: float = 0.0  # sum of the incumbent's raw log losses in the current phase
    phase_loss_candidate: float = 0.0  # ... and of the candidate's
    shadow_gain: float = 0.0  # sum of the (unscaled, clipped) paired loss gains in shadow
    canary_served: int = 0
    canary_regret: float = 0.0  # candidate's extra loss summed over the canary events it served
    better: BettingTest | None = None
    worse: BettingTest | RestartingTest | None = None  # shadow: one test; canary and watch: restarting
    history: list[dict[str, Any]] = field(default_factory=list)  # the transitions so far, as dicts

    @property
    def stage(self) -> str:
        return "PROMOTED" if self.phase == "WATCH" else self.phase

    @property
    def done(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def canary_fraction(self) -> float:
        return self.config.canary_fraction if self.phase == "CANARY" else 0.0

    def serves_candidate(self, event_id: str) -> bool:
        """Whether the candidate serves this event now (only in CANARY, by the shared hash)."""
        return self.phase == "CANARY" and serves_candidate(event_id, self.config.canary_fraction)

    # --- driving it ------------------------------------------------------------------------

    def start(self) -> Transition:
        """CANDIDATE -> SHADOW: the two shadow tests start empty."""
        if self.phase != "CANDIDATE":
            raise RolloutError(f"rollout of {self.model} {self.candidate} already started ({self.phase})")
        c = self.config
        self.better = BettingTest(c.alpha, c.min_improvement / c.loss_clip)
        self.worse = BettingTest(c.harm_alpha, 0.0)
        return self._enter("SHADOW", None, CAUSE_SHADOW_STARTED,
                           f"shadow: {self.candidate} scored beside {self.incumbent} on new labelled events of "
                           f"{sorted(self.slices)}", 1.0)

    def observe(self, event_id: str, loss_incumbent: float, loss_candidate: float) -> Transition | None:
        """One paired event (losses on the same labelled event); the transition it causes, if any.

        In WATCH, ``loss_incumbent`` is the predecessor's and ``loss_candidate`` the promoted version's.
        """
        if self.phase in ("CANDIDATE", *FINAL_PHASES):
            raise RolloutError(f"rollout of {self.model} {self.candidate} is {self.phase}; it takes no events")
        clip = self.config.loss_clip
        li, lc = min(max(float(loss_incumbent), 0.0), clip), min(max(float(loss_candidate), 0.0), clip)
        if math.isnan(li) or math.isnan(lc):
            return None
        x = (li - lc) / clip  # > 0: the candidate did better on this event
        self.events += 1
        self.phase_events += 1
        self.phase_loss_incumbent += float(loss_incumbent)
        self.phase_loss_candidate += float(loss_candidate)
        assert self.better is not None and self.worse is not None
        if self.phase == "SHADOW":
            self.shadow_gain += li - lc
            self.better.update(x)
            self.worse.update(-x)
            return self._after_shadow_event()
        if self.phase == "CANARY" and serves_candidate(event_id, self.config.canary_fraction):
            self.canary_served += 1
            self.canary_regret += lc - li
        self.worse.update(-x)
        return self._after_harm_event()

    def abort(self, decision: str, cause: str, reason: str) -> Transition:
        """End the rollout now as ``decision`` (REJECTED or ROLLED_BACK), e.g. when the promotion's
        compare-and-swap finds that another version became current meanwhile."""
        if self.done or self.phase == "CANDIDATE" or decision not in ("REJECTED", "ROLLED_BACK"):
            raise RolloutError(f"cannot end the rollout of {self.model} {self.candidate} ({self.phase}) as {decision}")
        return self._enter(decision, decision, cause, reason, self._statistic())

    def rebase(self, incumbent: str, candidate: str, reason: str) -> None:
        """Go on with ``candidate`` (the old one's modules on the new ``incumbent``, see
        :mod:`retrain_jobs.rebase`): same predictions on the slices, so the evidence stands."""
        if self.done:
            raise RolloutError(f"rollout of {self.model} {self.candidate} is {self.phase}; nothing to rebase")
        self.history.append({"kind": "REBASED", "stage": self.stage, "decision": None, "cause": "", "reason": reason,
                             "statistic": self._statistic(), "events": self.phase_events, "checks": {},
                             "from_candidate": self.candidate, "from_incumbent": self.incumbent})  # fmt: skip
        self.incumbent, self.candidate = incumbent, candidate

    def reconcile(self, current_version: str | None) -> Transition | None:
        """The registry pointer is the truth: the transition that makes this rollout agree with
        it (after a crash between a pointer swap and the checkpoint, or a change by hand), or
        None when they agree."""
        if self.done or self.phase == "CANDIDATE":
            return None
        if self.phase in ("SHADOW", "CANARY"):
            if current_version == self.incumbent:
                return None
            if current_version == self.candidate:
                return self._enter_watch(CAUSE_REGISTRY_MOVED, f"the registry already points at {self.candidate}: "
                                         "promoted", self._statistic())
            return self.abort("REJECTED", CAUSE_STALE_PARENT, f"stale parent: the current version moved from "
                              f"{self.incumbent} to {current_version} during the rollout")
        if current_version == self.candidate:  # WATCH
            return None
        return self.abort("ROLLED_BACK", CAUSE_REGISTRY_MOVED, f"the registry points at {current_version}, not the "
                          f"promoted {self.candidate} (rolled back before a restart, or by hand)")

    # --- internals ------------------------------------------------------------------------

    def _statistic(self) -> float:
        test = self.better if self.phase == "SHADOW" else self.worse
        return test.e_value if test is not None else 1.0

    def _after_shadow_event(self) -> Transition | None:
        c, better, worse = self.config, self.better, self.worse
        assert better is not None and worse is not None
        if better.rejected:
            reason = (f"shadow won: e-value {better.e_value:.1f} >= 1/alpha = {1 / c.alpha:.0f} after "
                      f"{better.n} paired events, mean log-loss gain {better.mean * c.loss_clip:+.4f} "
                      f"> {c.min_improvement} (false-promotion rate <= {c.alpha})")
            if c.canary_fraction > 0:
                return self._enter_harm("CANARY", CAUSE_SHADOW_WON, reason + f"; canary {c.canary_fraction:.0%}",
                                        better.e_value, c.harm_alpha, 0.0)
            return self._enter_watch(CAUSE_SHADOW_WON, reason + "; no canary", better.e_value)
        if worse.rejected:
            return self._enter("REJECTED", "REJECTED", CAUSE_SHADOW_LOST,
                               f"shadow lost: the candidate is worse, e-value {worse.e_value:.1f} >= "
                               f"1/alpha = {1 / c.harm_alpha:.0f} after {worse.n} paired events, mean log-loss gain "
                               f"{better.mean * c.loss_clip:+.4f}", worse.e_value)
        if self.phase_events >= c.max_shadow_events:
            return self._enter("REJECTED", "REJECTED", CAUSE_SHADOW_UNDECIDED,
                               f"shadow undecided after {self.phase_events} paired events (max "
                               f"{c.max_shadow_events}): e-value {better.e_value:.2f} < {1 / c.alpha:.0f}, mean "
                               f"log-loss gain {better.mean * c.loss_clip:+.4f}", better.e_value)
        return None

    def _after_harm_event(self) -> Transition | None:
        c, worse = self.config, self.worse
        assert worse is not None
        limit = c.canary_events if self.phase == "CANARY" else c.watch_events
        tol = worse.margin * c.loss_clip
        if worse.rejected:
            cause = CAUSE_CANARY_REGRESSED if self.phase == "CANARY" else CAUSE_WATCH_REGRESSED
            lead = (worse.leader if isinstance(worse, RestartingTest) else worse) or worse
            return self._enter("ROLLED_BACK", "ROLLED_BACK", cause,
                               f"{self.phase.lower()} regressed: {self.candidate} worse than {self.incumbent} by more "
                               f"than {tol} log loss, e-value {worse.e_value:.1f} >= {worse.threshold:.0f} (alpha "
                               f"{c.harm_alpha} over {self._restarts(worse)} restarts) on the last {lead.n} of "
                               f"{worse.n} paired events, mean log-loss increase there {lead.mean * c.loss_clip:+.4f}",
                               worse.e_value)
        if self.phase_events < limit:
            return None
        if self.phase == "CANARY":
            return self._enter_watch(CAUSE_CANARY_PASSED,
                                     f"canary passed: {self.phase_events} paired events without a significant "
                                     f"regression (e-value {worse.e_value:.2f} < {worse.threshold:.0f}), regret "
                                     f"{self.canary_regret:+.3f} over {self.canary_served} served events",
                                     worse.e_value)
        return self._enter("PROMOTED", None, CAUSE_WATCH_PASSED,
                           f"watch passed: {self.phase_events} paired events within tolerance {tol} (e-value "
                           f"{worse.e_value:.2f} < {worse.threshold:.0f}), mean log-loss increase "
                           f"{worse.mean * c.loss_clip:+.4f}", worse.e_value, kind="WATCH_PASSED")

    def _enter_watch(self, cause: str, reason: str, statistic: float) -> Transition:
        c = self.config
        if c.watch_events <= 0:
            return self._enter("PROMOTED", "PROMOTED", cause, reason + "; no watch", statistic)
        return self._enter_harm("WATCH", cause, reason + f"; watching {c.watch_events} events", statistic,
                                c.harm_alpha, c.watch_tolerance / c.loss_clip, decision="PROMOTED")

    def _enter_harm(self, phase: str, cause: str, reason: str, statistic: float, alpha: float, margin: float,
                    decision: str | None = None) -> Transition:
        t = self._enter(phase, decision, cause, reason, statistic)
        horizon = self.config.canary_events if phase == "CANARY" else self.config.watch_events
        self.worse = RestartingTest(alpha, margin, self.config.restart_events, horizon)
        return t

    @staticmethod
    def _restarts(test: BettingTest | RestartingTest) -> int:
        return test.starts if isinstance(test, RestartingTest) else 1

    def _enter(self, phase: str, decision: str | None, cause: str, reason: str, statistic: float,
               kind: str | None = None) -> Transition:
        checks = self.checks()
        events = self.phase_events if self.phase != "CANDIDATE" else 0
        losses = (self.phase_loss_candidate / events, self.phase_loss_incumbent / events) if events else (None, None)
        self.phase, self.phase_events = phase, 0
        self.phase_loss_incumbent = self.phase_loss_candidate = 0.0
        t = Transition(kind or phase, self.stage, decision, cause, reason, float(statistic), events, checks, *losses)
        self.history.append(asdict(t))
        return t

    def checks(self) -> dict[str, float]:
        """The numbers of the tests so far (RetrainResult.checks)."""
        c = self.config
        out = {"alpha": c.alpha, "harm_alpha": c.harm_alpha, "loss_clip": c.loss_clip, "events": float(self.events),
               "canary_fraction": c.canary_fraction, "canary_served": float(self.canary_served),
               "canary_regret": self.canary_regret}
        if self.better is not None:
            out.update(shadow_e_value=self.better.e_value, shadow_events=float(self.better.n),
                       shadow_mean_gain=self.better.mean * c.loss_clip)
        if self.worse is not None and self.phase != "SHADOW":
            out.update({f"{self.phase.lower()}_harm_e_value": self.worse.e_value,
                        f"{self.phase.lower()}_events": float(self.worse.n),
                        f"{self.phase.lower()}_mean_increase": self.worse.mean * c.loss_clip})
        elif self.worse is not None:
            out["shadow_harm_e_value"] = self.worse.e_value
        return out

    # --- checkpoints ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        d = dict(data)
        d["config"] = RolloutConfig(**d["config"])
        for name in ("better", "worse"):
            if d.get(name) is not None and "tests" in d[name]:
                d[name] = RestartingTest(**{**d[name], "tests": [BettingTest(**t) for t in d[name]["tests"]]})
            elif d.get(name) is not None:
                d[name] = BettingTest(**d[name])
        if d.get("phase") not in PHASES:
            raise RolloutError(f"rollout checkpoint: unknown phase {d.get('phase')!r}; known: {PHASES}")
        return cls(**d)
