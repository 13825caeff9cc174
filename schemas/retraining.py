"""The retraining contract shared by the router (``consumers/``) and the jobs (``retrain_jobs/``).

Both sides import it from here, so neither package imports the other for it. A result says
why it ended so in its typed ``cause`` (one of :class:`Cause`); the router decides on that
field alone (escalate or not, cool down how), never on the human-readable ``reason``.
"""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """RetrainRequest.tier, in escalation order."""

    ADAPTER = "ADAPTER"
    MODULE = "MODULE"
    FULL = "FULL"


TIERS = tuple(t.value for t in Tier)  # escalation order


class AlertType(StrEnum):
    DATA_DRIFT = "DATA_DRIFT"
    DATA_QUALITY = "DATA_QUALITY"
    PERFORMANCE_DRIFT = "PERFORMANCE_DRIFT"
    LABEL_DRIFT = "LABEL_DRIFT"


# Inputs moved: whether that hurts the model is an open question (triage answers it).
FEATURE_ALERTS = frozenset({AlertType.DATA_DRIFT.value, AlertType.DATA_QUALITY.value})
# The model's own errors or the labels moved: harm is the alert itself, straight to training.
CONCEPT_ALERTS = frozenset({AlertType.PERFORMANCE_DRIFT.value, AlertType.LABEL_DRIFT.value})


class Decision(StrEnum):
    PROMOTED = "PROMOTED"
    REJECTED = "REJECTED"
    ROLLED_BACK = "ROLLED_BACK"
    SKIPPED = "SKIPPED"
    CANDIDATE = "CANDIDATE"


class Cause(StrEnum):
    """RetrainResult.cause: why a result ended so (the reason gives the numbers)."""

    GATE_PASSED = "GATE_PASSED"  # every gate check passed
    # gate checks that failed (the first failed one in gate order; the reason names all of them)
    MIN_GAIN = "MIN_GAIN"  # an affected slice did not improve enough
    CALIBRATION = "CALIBRATION"  # calibration on the affected slices got worse beyond tolerance
    FAIRNESS = "FAIRNESS"  # the error-rate gap between groups widened beyond tolerance
    TOLERANCE = "TOLERANCE"  # another slice got worse beyond tolerance
    LATENCY = "LATENCY"  # inference over budget
    # the job could not decide on its merits
    HOLDOUT = "HOLDOUT"  # too few holdout events on an affected slice
    DATA = "DATA"  # the snapshot lacked (labelled) data
    STALE_PARENT = "STALE_PARENT"  # another job's promotion kept overtaking this one
    JOB_FAILED = "JOB_FAILED"  # the job crashed or the request was undecodable
    # triage
    NO_HARM = "NO_HARM"  # SKIPPED: the drift did not significantly raise the model's loss
    # the rollout (retrain_jobs/rollout.py): decided on live events after the offline gate
    ROLLOUT_SHADOW_STARTED = "rollout_shadow_started"
    ROLLOUT_SHADOW_WON = "rollout_shadow_won"
    ROLLOUT_SHADOW_LOST = "rollout_shadow_lost"
    ROLLOUT_SHADOW_UNDECIDED = "rollout_shadow_undecided"
    ROLLOUT_CANARY_PASSED = "rollout_canary_passed"
    ROLLOUT_CANARY_REGRESSED = "rollout_canary_regressed"
    ROLLOUT_WATCH_PASSED = "rollout_watch_passed"
    ROLLOUT_WATCH_REGRESSED = "rollout_watch_regressed"
    ROLLOUT_STALE_PARENT = "rollout_stale_parent"
    ROLLOUT_REGISTRY_MOVED = "rollout_registry_moved"


ROLLOUT_CAUSE_PREFIX = "rollout_"  # the common prefix of the rollout's cause values
ROLLOUT_CAUSES = frozenset(c for c in Cause if c.value.startswith(ROLLOUT_CAUSE_PREFIX))


# A REJECTED result with one of these causes makes the router try the next tier: a broader
# update may clear the check. Every other cause is final: retrying is no fix (a crash, missing
# data) or the slice alerts again after its cooldown (a stale parent).
ESCALATING_CAUSES = frozenset({Cause.MIN_GAIN, Cause.CALIBRATION, Cause.FAIRNESS, Cause.TOLERANCE, Cause.LATENCY})


def cause_of(result: dict) -> Cause | None:
    """The typed cause of a result record; None for a writer before causes or an unknown one."""
    try:
        return Cause(result.get("cause"))
    except ValueError:
        return None


def decided_live(result: dict) -> bool:
    """True for a result the rollout decided on live events (shadow, canary, watch)."""
    return cause_of(result) in ROLLOUT_CAUSES


def escalates(result: dict) -> bool:
    """True when a REJECTED result's cause says a broader tier may pass (no cause: final)."""
    return result.get("decision") == Decision.REJECTED and cause_of(result) in ESCALATING_CAUSES
