"""The RetrainResult record, built in one place for jobs, failed jobs and manual rollbacks."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from schemas.codec import RETRAIN_RESULT


def retrain_result(request: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """A RetrainResult for ``request`` (its request_id, model, tier, slices): REJECTED with nothing
    trained unless ``fields`` say otherwise."""
    return {
        "schema_version": RETRAIN_RESULT.version,
        "request_id": request["request_id"],
        "model": request["model"],
        "new_version": None,
        "parent_version": None,
        "tier": request["tier"],
        "slices": list(request.get("slices") or []),
        "modules_updated": [],
        "params_updated": 0,
        "params_total": 0,
        "train_seconds": 0.0,
        "metric_name": "",
        "metric_before": math.nan,
        "metric_after": math.nan,
        "other_slices_max_regression": 0.0,
        "latency_ms": None,
        "decision": "REJECTED",
        "reason": "",
        "artifact_uri": None,
        "finished_at": time.time_ns() // 1_000_000,
        "cause": None,
        "module_scores": {},
        "checks": {},
        **fields,
    }
