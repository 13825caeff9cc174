"""The retraining policy router, as a pure state machine: alerts and results in, requests out.

No I/O and no clock reads: every method takes ``now`` (epoch seconds) and, where a snapshot is
cut, the events topic's current end offsets; the Kafka service around it is
:mod:`consumers.router_service`. The policy, step by step:

1. **Coalesce.** Alerts are grouped by (model, slice). A group becomes *due* once it is
   ``coalesce_seconds`` old AND enough post-alert data exists: the estimated events of the
   slice after the newest alert's window (offsets on its partition after ``last_offset`` times
   the slice's share of that window, ``(reference.count + current.count) / (last - first + 1)``)
   must reach ``min_post_alert_events``, so the job sees the drifted regime, not only its onset.
   After ``max_wait_seconds`` a group is due anyway (the job judges whether the data suffices).
2. **Broad drift.** When the due groups of one model cover at least ``broad_min_slices`` slices
   and ``broad_fraction`` of the slices known for the model (from alerts and drift stats), they
   and the model's other pending groups become ONE request; otherwise one request per slice.
   Which tier and modules follow is the planner's call (``retrain_jobs.dependency.plan``),
   given all alerts, capped at ``max_tier``.
3. **Priority.** ``1000 x`` the highest severity (LOW 1, MEDIUM 2, HIGH 3) ``+`` a traffic
   score ``min(999, round(100 x log10(1 + events per minute)))`` summed over the request's
   slices, events per minute measured on the alert windows (count over event-time span).
   Due requests are released highest priority first, then oldest first.
4. **Budget.** At most ``max_in_flight`` requests are in flight (emitted, no RetrainResult
   yet); a request whose result does not come within ``in_flight_timeout_seconds`` frees its
   slot (logged by the service). Due groups wait for a slot; they are never dropped.
5. **Cooldown.** A request for (model, slice) starts a cooldown of ``cooldown_seconds``; alerts
   for that slice arriving in it (or while its request is in flight) are suppressed: the
   request's snapshot already reaches past them. Alerts already part of a request (a replay
   after a restart) are dropped as duplicates.
   **Triage.** A result SKIPPED by triage (a data drift that did not hurt the model, cause
   NO_HARM) cools the slice down again from its arrival; a PERFORMANCE_DRIFT or LABEL_DRIFT
   alert on that slice still gets through that cooldown (measured harm outranks the triage).
6. **Escalation.** A REJECTED result whose typed ``cause`` is a gate check
   (:data:`schemas.retraining.ESCALATING_CAUSES`; not a failed job, missing data or a stale
   parent) makes a request for the next tier (``next_tier``:
   ADAPTER -> MODULE -> FULL) on the same alerts and the same snapshot, up to ``max_tier`` and
   ``max_escalations`` per original request; it takes the freed slot at once. ``max_tier``
   defaults to MODULE: a full retrain (every parameter) never starts on its own unless configured.
7. **Rollout.** A CANDIDATE result (the version passed the offline gate; the rollout service
   now judges it on live events) frees the budget slot but keeps its slices busy until the
   rollout's final result for the same request (at most ``rollout_hold_seconds``). A live
   ROLLED_BACK or REJECTED (a cause in :data:`~schemas.retraining.ROLLOUT_CAUSES`) is final,
   never escalated, and starts a fresh cooldown on its slices (any ROLLED_BACK does), so the
   same drift does not start a retrain / rollback ping-pong.
8. **Determinism.** ``request_id`` hashes model, sorted slices, tier and sorted alert ids: a
   replay of the same alerts after a crash makes the same id, and the job (idempotent per
   request_id) the same decision. After a restart, :func:`consumers.router_restore.restore`
   rebuilds cooldowns, in-flight slots and the requested alert ids from the requests and
   results topics, and what it needs to escalate a request from the alerts topic.

What a request holds (its id, priority and snapshot ranges) is computed from its alerts in
:mod:`consumers.router_requests`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consumers.router_requests import (
    Alert,
    PlanLike,
    Request,
    Source,
    escalated_request,
    new_request,
    post_alert_events,
    snapshot_for,
)
from schemas.errors import DriftError
from schemas.retraining import CONCEPT_ALERTS, TIERS, Cause, Decision, cause_of, decided_live, escalates

REMEMBERED_REQUESTS = 10_000
REMEMBERED_ALERT_IDS = 100_000


# (model, alerts, tier or None, n_slices_seen) -> Plan; the service binds the registry's manifest
Planner = Callable[[str, list[Alert], "str | None", "int | None"], PlanLike]
NextTier = Callable[[str], "str | None"]


@dataclass(frozen=True)
class RouterConfig:
    """The router's settings (defaults live in one place: :class:`~schemas.settings.Settings`)."""

    coalesce_seconds: float
    max_wait_seconds: float
    min_post_alert_events: int
    cooldown_seconds: float
    max_in_flight: int
    in_flight_timeout_seconds: float
    max_tier: str
    max_escalations: int
    broad_fraction: float
    broad_min_slices: int
    reference_events: int
    snapshot_max_events: int
    other_partition_events: int
    events_topic: str
    rollout_hold_seconds: float = 6 * 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> RouterConfig:
        return cls(
            coalesce_seconds=settings.router_coalesce_seconds,
            max_wait_seconds=settings.router_max_wait_seconds,
            min_post_alert_events=settings.router_min_post_alert_events,
            cooldown_seconds=settings.router_cooldown_seconds,
            max_in_flight=settings.router_max_in_flight,
            in_flight_timeout_seconds=settings.router_in_flight_timeout_seconds,
            max_tier=settings.router_max_tier,
            max_escalations=settings.router_max_escalations,
            broad_fraction=settings.router_broad_fraction,
            broad_min_slices=settings.router_broad_min_slices,
            reference_events=settings.router_reference_events,
            snapshot_max_events=settings.router_snapshot_max_events,
            other_partition_events=settings.router_other_partition_events,
            events_topic=settings.topics.events,
            rollout_hold_seconds=settings.rollout_slice_hold_seconds,
        )


def cools_down(result: Mapping[str, Any]) -> bool:
    """A ROLLED_BACK, or a REJECTED decided on live events (not a stale parent, which says nothing
    about the slice): the slice cools down afresh so the same drift does not ping-pong."""
    if result["decision"] == Decision.ROLLED_BACK:
        return True
    return (result["decision"] == Decision.REJECTED and decided_live(result)
            and cause_of(result) != Cause.ROLLOUT_STALE_PARENT)  # fmt: skip


def tier_rank(tier: str) -> int:
    return TIERS.index(tier)


@dataclass
class Group:
    """Alerts of one (model, slice) waiting to become a request."""

    model: str
    slice: str
    first_seen: float
    alerts: dict[str, Alert] = field(default_factory=dict)  # alert_id -> alert
    sources: dict[str, Source] = field(default_factory=dict)  # alert_id -> where it was read


@dataclass
class Emitted:
    """A request this router made, remembered for escalation and the budget."""

    request: Request
    alerts: list[Alert]
    root_id: str  # the request_id of the first request of an escalation chain
    escalations: int = 0


class Router:
    """The policy; see the module docstring. ``planner`` and ``next_tier`` come from retrain_jobs."""

    def __init__(self, config: RouterConfig, planner: Planner, next_tier: NextTier):
        self.config = config
        self.planner = planner
        self.next_tier = next_tier
        self.pending: dict[tuple[str, str], Group] = {}
        self.in_flight: dict[str, float] = {}  # request_id -> deadline
        self.cooldown_until: dict[tuple[str, str], float] = {}
        self.busy_slices: dict[tuple[str, str], str] = {}  # (model, slice) -> in-flight request_id
        self.skipped_slices: set[tuple[str, str]] = set()  # last result SKIPPED: concept alerts pass the cooldown
        self.rolling_out: dict[str, float] = {}  # request_id of a CANDIDATE -> when its slices' hold ends
        self.emitted: OrderedDict[str, Emitted] = OrderedDict()
        self.requested_alerts: OrderedDict[str, None] = OrderedDict()
        self.slices_seen: dict[str, set[str]] = {}
        self.counters: dict[str, int] = {}
        self.errors: list[str] = []  # planning failures since the service last took them (to log)

    # --- inputs ------------------------------------------------------------------------

    def observe_slice(self, model: str, slice_: str) -> None:
        """A slice the streams worker monitors for ``model`` (from drift stats or alerts)."""
        self.slices_seen.setdefault(model, set()).add(slice_)

    def on_alert(self, alert: Alert, now: float, source: Source | None = None) -> str:
        """Take one alert; returns what happened to it: pending, duplicate, cooldown or busy."""
        key = (alert["model"], alert["slice"])
        self.observe_slice(*key)
        aid = alert["alert_id"]
        group = self.pending.get(key)
        if aid in self.requested_alerts or (group is not None and aid in group.alerts):
            return self._count("duplicate")
        if key in self.busy_slices:
            return self._count("busy")
        if now < self.cooldown_until.get(key, -math.inf) and not (
                key in self.skipped_slices and alert.get("alert_type") in CONCEPT_ALERTS):
            return self._count("cooldown")
        if group is None:
            group = self.pending[key] = Group(alert["model"], alert["slice"], now)
        group.alerts[aid] = alert
        if source is not None:
            group.sources[aid] = source
        return self._count("pending")

    def on_result(self, result: Mapping[str, Any], now: float) -> list[Request]:
        """A RetrainResult arrived: free its slot; escalate a rejection. Returns new requests."""
        rid, model, decision = result["request_id"], result["model"], result["decision"]
        self.in_flight.pop(rid, None)
        emitted = self.emitted.get(rid)
        slices = emitted.request["slices"] if emitted else result.get("slices", [])
        if decision == Decision.CANDIDATE:  # the rollout decides next; its slices stay busy meanwhile
            self.rolling_out[rid] = now + self.config.rollout_hold_seconds
            for s in slices:
                self.busy_slices[(model, s)] = rid
            self._count("result_candidate")
            return []
        self.rolling_out.pop(rid, None)
        for s in slices:
            if self.busy_slices.get((model, s)) == rid:
                del self.busy_slices[(model, s)]
        if cools_down(result):
            self.cool_down(model, slices, now)
            self._count(f"result_live_{decision.lower()}")
            return []
        if decision == Decision.SKIPPED and cause_of(result) == Cause.NO_HARM:
            self.mark_skipped(model, slices, now)
            return []
        if emitted is None:
            self._count("result_unknown")
            return []
        if not escalates(result):
            self._count("result_final")
            return []
        escalated = self._escalate(emitted, now)
        return [escalated] if escalated else []

    def expire(self, now: float) -> list[str]:
        """Free the slots of requests whose result is overdue (and the slices of rollouts whose
        hold ended); returns their ids."""
        late = [rid for rid, deadline in self.in_flight.items() if now >= deadline]
        late += [rid for rid, deadline in self.rolling_out.items() if now >= deadline]
        for rid in late:
            self.in_flight.pop(rid, None)
            self.rolling_out.pop(rid, None)
            for key, holder in list(self.busy_slices.items()):
                if holder == rid:
                    del self.busy_slices[key]
            self._count("expired")
        return late

    def forget(self, partitions: set[tuple[str, int]]) -> int:
        """Drop pending alerts read from partitions this router no longer owns (their new owner
        re-reads them from the committed offset). Returns how many were dropped."""
        dropped = 0
        for key, g in list(self.pending.items()):
            for aid, src in list(g.sources.items()):
                if (src[0], src[1]) in partitions:
                    del g.sources[aid], g.alerts[aid]
                    dropped += 1
            if not g.alerts:
                del self.pending[key]
        return dropped

    # --- outputs ------------------------------------------------------------------------

    def pending_sources(self) -> list[Source]:
        """Where the alerts still waiting in groups were read (their offsets must not be committed)."""
        return [src for g in self.pending.values() for src in g.sources.values()]

    def due(self, now: float, end_offsets: Mapping[int, int]) -> list[Request]:
        """Requests to emit now, highest priority first, within the budget."""
        ready = [g for g in self.pending.values() if self._ready(g, now, end_offsets)]
        if not ready:
            return []
        candidates: list[list[Group]] = []
        for model in sorted({g.model for g in ready}):
            mine = [g for g in ready if g.model == model]
            if self._broad(model, len(mine)):
                everything = [g for g in self.pending.values() if g.model == model]
                candidates.append(sorted(everything, key=lambda g: g.slice))
            else:
                candidates.extend([g] for g in mine)
        built = []
        for groups in candidates:
            try:
                built.append((self._build(groups, now, end_offsets), groups))
            except DriftError as exc:  # e.g. an unreadable manifest: drop the group, keep routing
                for g in groups:
                    del self.pending[(g.model, g.slice)]
                self.errors.append(f"no plan for {groups[0].model}/{','.join(g.slice for g in groups)}: {exc}")
                self._count("plan_failed")
        built.sort(key=lambda rg: (-rg[0]["priority"], min(g.first_seen for g in rg[1]), rg[0]["request_id"]))
        out = []
        for request, groups in built:
            if len(self.in_flight) >= self.config.max_in_flight:
                self._count("budget_wait")
                break
            for g in groups:
                del self.pending[(g.model, g.slice)]
            self._admit(request, [a for g in groups for a in g.alerts.values()], now, root_id=request["request_id"])
            out.append(request)
        return out

    # --- internals ----------------------------------------------------------------------

    def _ready(self, g: Group, now: float, end_offsets: Mapping[int, int]) -> bool:
        age = now - g.first_seen
        if age >= self.config.max_wait_seconds:
            return True
        if age < self.config.coalesce_seconds:
            return False
        newest = max(g.alerts.values(), key=lambda a: a["last_offset"])
        end = end_offsets.get(newest["partition"], newest["last_offset"] + 1)
        return post_alert_events(newest, end) >= self.config.min_post_alert_events

    def _broad(self, model: str, n_due: int) -> bool:
        known = len(self.slices_seen.get(model, ()))
        return n_due >= self.config.broad_min_slices and n_due >= self.config.broad_fraction * known

    def _plan(self, model: str, alerts: list[Alert], tier: str | None) -> PlanLike:
        n_seen = len(self.slices_seen.get(model, ())) or None
        plan = self.planner(model, alerts, tier, n_seen)
        if tier_rank(plan.tier) > tier_rank(self.config.max_tier):
            plan = self.planner(model, alerts, self.config.max_tier, n_seen)
        return plan

    def _build(self, groups: list[Group], now: float, end_offsets: Mapping[int, int]) -> Request:
        model = groups[0].model
        alerts = sorted((a for g in groups for a in g.alerts.values()), key=lambda a: a["alert_id"])
        plan = self._plan(model, alerts, None)
        slices = sorted(plan.slices or {g.slice for g in groups})
        return new_request(model, alerts, slices, plan, self.snapshot(alerts, slices, end_offsets), now)

    def snapshot(self, alerts: list[Alert], slices: list[str], end_offsets: Mapping[int, int]) -> dict[str, Any]:
        """The DataSnapshot of a request (:func:`consumers.router_requests.snapshot_for`)."""
        cfg = self.config
        return snapshot_for(alerts, slices, end_offsets, topic=cfg.events_topic, reference_events=cfg.reference_events,
                            snapshot_max_events=cfg.snapshot_max_events,
                            other_partition_events=cfg.other_partition_events)  # fmt: skip

    def _admit(self, request: Request, alerts: list[Alert], now: float, root_id: str, escalations: int = 0) -> None:
        rid = request["request_id"]
        self.in_flight[rid] = now + self.config.in_flight_timeout_seconds
        for s in request["slices"]:
            key = (request["model"], s)
            self.busy_slices[key] = rid
            self.cooldown_until[key] = now + self.config.cooldown_seconds
            self.skipped_slices.discard(key)
        for a in alerts:
            self.remember_alert(a["alert_id"])
        self.emitted[rid] = Emitted(request, alerts, root_id, escalations)
        self.emitted.move_to_end(rid)
        while len(self.emitted) > REMEMBERED_REQUESTS:
            self.emitted.popitem(last=False)
        self._count("escalated" if escalations else "requested")

    def _escalate(self, emitted: Emitted, now: float) -> Request | None:
        old = emitted.request
        nxt = self.next_tier(old["tier"])
        if nxt is None or tier_rank(nxt) > tier_rank(self.config.max_tier) or emitted.escalations >= self.config.max_escalations:
            self._count("gave_up")
            return None
        try:
            plan = self._plan(old["model"], emitted.alerts, nxt)
        except DriftError as exc:
            self.errors.append(f"no {nxt} plan to escalate {old['request_id']}: {exc}")
            self._count("gave_up")
            return None
        slices = sorted(plan.slices or old["slices"])
        request = escalated_request(old, slices, plan, now)
        if request["request_id"] in self.emitted:  # the planner could not go broader
            self._count("gave_up")
            return None
        self._admit(request, emitted.alerts, now, emitted.root_id, emitted.escalations + 1)
        return request

    # --- state changes (also made by consumers.router_restore) -------------------------

    def mark_skipped(self, model: str, slices: Iterable[str], now: float) -> None:
        """Triage found no harm: the slice cools down from now; concept alerts still pass."""
        self.cool_down(model, slices, now)
        self.skipped_slices.update((model, s) for s in slices)
        self._count("skipped")

    def cool_down(self, model: str, slices: Iterable[str], now: float) -> None:
        for s in slices:
            key = (model, s)
            self.cooldown_until[key] = max(self.cooldown_until.get(key, -math.inf), now + self.config.cooldown_seconds)

    def remember_alert(self, alert_id: str) -> None:
        self.requested_alerts[alert_id] = None
        self.requested_alerts.move_to_end(alert_id)
        while len(self.requested_alerts) > REMEMBERED_ALERT_IDS:
            self.requested_alerts.popitem(last=False)

    def _count(self, what: str) -> str:
        self.counters[what] = self.counters.get(what, 0) + 1
        return what
