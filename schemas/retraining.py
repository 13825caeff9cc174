"""The retraining contract shared by the router (``consumers/``) and the jobs (``retrain_jobs/``).

Both sides import it from here, so neither package imports the other for it.
"""

from __future__ import annotations

TIERS = ("ADAPTER", "MODULE", "FULL")  # escalation order of RetrainRequest.tier

# Reasons a result carries, by prefix. A job that crashed is not escalated (retrying is no fix);
# neither is one whose snapshot lacked (holdout) data, or that another job's promotion kept
# overtaking (the slice alerts again after its cooldown).
FAILED_REASON_PREFIX = "job failed: "
FINAL_REASON_PREFIXES = (FAILED_REASON_PREFIX, "data:", "holdout:", "stale parent:")

# RetrainResult.cause of the rollout's results (retrain_jobs/rollout.py): a result with such a
# cause was decided on live events (shadow, canary, watch); the router never escalates it.
ROLLOUT_CAUSE_PREFIX = "rollout_"
