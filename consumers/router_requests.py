"""What a RetrainRequest is made of, computed from its alerts: key, id, priority and snapshot.

Pure arithmetic on alert windows, kept apart from the policy (:mod:`consumers.router`) that decides
when a request is made: the id must be deterministic (a replay after a crash makes the same
request), and the estimates (a slice's share of its partition, the onset of a change, the
post-alert events) are shared by the policy's coalescing and the snapshot.

The snapshot of a request: the events topic; for every partition holding an alert window, the
range from the estimated onset of the change (the window's current part counted back from its
last offset, :func:`onset_offset`) minus ``reference_events`` to the partition's end at request
time (the drifted regime, up to now), capped at ``snapshot_max_events``; for every other
partition its last ``other_partition_events`` events (the other slices, for the "no other slice
got worse" check); ``slice_filter`` = the request's slices;
``labelled_only`` true. The job trains the targets on all of their slices' events in the
snapshot, so by default (``reference_events`` 0) it holds no pre-drift data of the drifted slice.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from schemas.codec import RETRAIN_REQUEST

POLICY_VERSION = "router-1"
SEVERITY_RANK = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}

Alert = dict[str, Any]
Request = dict[str, Any]
Source = tuple[str, int, int]  # (topic, partition, offset) of the alert message


class PlanLike(Protocol):
    """What the planner (``retrain_jobs.dependency.plan``) decided: tier, modules, slices."""

    tier: str
    modules: tuple[str, ...]
    slices: tuple[str, ...]


def request_key(request: Mapping[str, Any]) -> bytes:
    """Kafka key of a RetrainRequest: model and slices. A slice's requests (and escalations) stay
    in order on one partition; other slices of the same model can run on other workers."""
    return f"{request['model']}/{','.join(sorted(request['slices']))}".encode()


def request_id_for(model: str, slices: Iterable[str], tier: str, alert_ids: Iterable[str]) -> str:
    """Deterministic id: the same alerts, slices and tier always make the same request."""
    raw = "\x1f".join([model, ",".join(sorted(slices)), tier, ",".join(sorted(alert_ids))])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _counts(alert: Alert) -> tuple[int, int]:
    """(reference, current) event counts of the alert's window."""
    return (alert.get("reference", {}).get("count", 0) or 0, alert.get("current", {}).get("count", 0) or 0)


def slice_share(alert: Alert) -> float:
    """The slice's share of its partition's events, measured on the alert's window (which spans
    first_offset..last_offset and holds the reference and current counts of the slice)."""
    span = alert["last_offset"] - alert["first_offset"] + 1
    n = sum(_counts(alert))
    return min(1.0, n / span) if n > 0 and span > 0 else 1.0


def onset_offset(alert: Alert) -> int:
    """Estimated offset where the change began: the window's current part, counted back from
    its last offset on the partition, within the window."""
    back = math.ceil(_counts(alert)[1] / slice_share(alert))
    return min(max(alert["last_offset"] + 1 - back, alert["first_offset"]), alert["last_offset"])


def events_per_minute(alert: Alert) -> float:
    """The slice's traffic seen in the alert's window: its events over the window's event-time span."""
    span_ms = max(alert["window_end_event_time"] - alert["window_start_event_time"], 1)
    return sum(_counts(alert)) * 60_000.0 / span_ms


def priority_for(alerts: list[Alert]) -> int:
    """1000 x highest severity + a log-scaled traffic score (higher is more urgent)."""
    severity = max(SEVERITY_RANK.get(a["severity"], 1) for a in alerts)
    per_slice: dict[str, float] = {}
    for a in alerts:
        per_slice[a["slice"]] = max(per_slice.get(a["slice"], 0.0), events_per_minute(a))
    traffic = sum(per_slice.values())
    return 1000 * severity + min(999, round(100 * math.log10(1 + traffic)))


def post_alert_events(alert: Alert, end_offset: int) -> float:
    """Estimated events of the alert's slice on its partition after the alert's window."""
    return max(0, end_offset - alert["last_offset"] - 1) * slice_share(alert)


def snapshot_for(alerts: list[Alert], slices: list[str], end_offsets: Mapping[int, int], *, topic: str,
                 reference_events: int, snapshot_max_events: int, other_partition_events: int) -> dict[str, Any]:
    """The DataSnapshot of a request (see the module docstring)."""
    windows: dict[int, tuple[int, int]] = {}  # partition -> (earliest onset, latest window end)
    for a in alerts:
        onset = onset_offset(a)
        lo, hi = windows.get(a["partition"], (onset, a["last_offset"]))
        windows[a["partition"]] = (min(lo, onset), max(hi, a["last_offset"]))
    ranges = []
    for p in sorted(set(end_offsets) | set(windows)):
        end = end_offsets.get(p, 0)
        if p in windows:
            onset, last = windows[p]
            end = max(end, last + 1)
            start = max(0, onset - reference_events)
            end = min(end, max(last + 1, start + snapshot_max_events))
        else:
            start = max(0, end - other_partition_events)
        if end > start:
            ranges.append({"partition": p, "start_offset": start, "end_offset": end})
    return {"topic": topic, "ranges": ranges, "slice_filter": list(slices), "labelled_only": True}


def new_request(model: str, alerts: list[Alert], slices: list[str], plan: PlanLike, snapshot: dict[str, Any],
                now: float) -> Request:
    """A RetrainRequest for ``alerts`` (sorted by alert id) on ``slices`` as planned."""
    ids = [a["alert_id"] for a in alerts]
    return {
        "schema_version": RETRAIN_REQUEST.version,
        "request_id": request_id_for(model, slices, plan.tier, ids),
        "alert_ids": ids,
        "model": model,
        "slices": slices,
        "modules": sorted(plan.modules),
        "tier": plan.tier,
        "snapshot": snapshot,
        "priority": priority_for(alerts),
        "policy_version": POLICY_VERSION,
        "created_at": int(now * 1000),
        "alert_types": sorted({a["alert_type"] for a in alerts}),
    }


def escalated_request(old: Request, slices: list[str], plan: PlanLike, now: float) -> Request:
    """The next tier's request on the same alerts and the same snapshot (narrowed to ``slices``)."""
    return {
        **old,
        "request_id": request_id_for(old["model"], slices, plan.tier, old["alert_ids"]),
        "slices": slices,
        "modules": sorted(plan.modules),
        "tier": plan.tier,
        "snapshot": {**old["snapshot"], "slice_filter": slices},
        "created_at": int(now * 1000),
    }
