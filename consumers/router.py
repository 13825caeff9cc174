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
   request_id) the same decision. After a restart, :meth:`Router.restore` rebuilds cooldowns,
   in-flight slots and the requested alert ids from the requests and results topics, and
   what it needs to escalate a request from the alerts topic.

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
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.codec import RETRAIN_REQUEST
from schemas.errors import DriftError
from schemas.retraining import CONCEPT_ALERTS, TIERS, Cause, Decision, cause_of, decided_live, escalates

POLICY_VERSION = "router-1"
SEVERITY_RANK = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}
REMEMBERED_REQUESTS = 10_000
REMEMBERED_ALERT_IDS = 100_000

Alert = dict[str, Any]
Request = dict[str, Any]
Source = tuple[str, int, int]  # (topic, partition, offset) of the alert message


class PlanLike(Protocol):
    tier: str
    modules: tuple[str, ...]
    slices: tuple[str, ...]


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


def _cools_down(result: Mapping[str, Any]) -> bool:
    """A ROLLED_BACK, or a REJECTED decided on live events (not a stale parent, which says nothing
    about the slice): the slice cools down afresh so the same drift does not ping-pong."""
    if result["decision"] == Decision.ROLLED_BACK:
        return True
    return (result["decision"] == Decision.REJECTED and decided_live(result)
            and cause_of(result) != Cause.ROLLOUT_STALE_PARENT)  # fmt: skip


def tier_rank(tier: str) -> int:
    return TIERS.index(tier)


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
        if _cools_down(result):
            self._cool_down(model, slices, now)
            self._count(f"result_live_{decision.lower()}")
            return []
        if decision == Decision.SKIPPED and cause_of(result) == Cause.NO_HARM:
            self._skipped(model, slices, now)
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

    def restore(self, requests: Iterable[Request], results: Iterable[Mapping[str, Any]], now: float,
                alerts: Iterable[Alert] = ()) -> None:
        """Rebuild cooldowns, in-flight slots and requested alert ids from the topics after a restart.

        Requests older than the in-flight timeout hold no slot; their alerts still count as
        requested. A request whose alerts are all among ``alerts`` (the alerts topic's recent
        records) can be escalated again: the requests on the same alert ids form its chain,
        oldest first, which gives its root and its escalation count. One whose alerts are gone
        is not escalated.
        """
        results = sorted(results, key=lambda r: r.get("finished_at") or 0)
        done = {r["request_id"] for r in results}
        latest = {r["request_id"]: r for r in results}  # the newest result of each request
        by_id = {a["alert_id"]: a for a in alerts}
        chains: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for req in sorted(requests, key=lambda r: r["created_at"]):
            created = req["created_at"] / 1000.0
            chain = chains.setdefault((req["model"], tuple(sorted(req["alert_ids"]))), [])
            if req["request_id"] not in chain:
                chain.append(req["request_id"])
            if all(aid in by_id for aid in req["alert_ids"]):
                self.emitted[req["request_id"]] = Emitted(
                    req, [by_id[aid] for aid in req["alert_ids"]], chain[0], chain.index(req["request_id"]))
                self.emitted.move_to_end(req["request_id"])
            for aid in req["alert_ids"]:
                self._remember_alert(aid)
            for s in req["slices"]:
                key = (req["model"], s)
                self.cooldown_until[key] = max(self.cooldown_until.get(key, -math.inf), created + self.config.cooldown_seconds)
                self.observe_slice(*key)
            deadline = created + self.config.in_flight_timeout_seconds
            if req["request_id"] not in done and now < deadline:
                self.in_flight[req["request_id"]] = deadline
                for s in req["slices"]:
                    self.busy_slices[(req["model"], s)] = req["request_id"]
        for res in latest.values():  # rollouts still deciding hold their slices; live endings cool them
            at = (res.get("finished_at") or 0) / 1000.0
            if res["decision"] == "CANDIDATE" and now < at + self.config.rollout_hold_seconds:
                self.rolling_out[res["request_id"]] = at + self.config.rollout_hold_seconds
                for s in res.get("slices") or []:
                    self.busy_slices[(res["model"], s)] = res["request_id"]
            elif _cools_down(res):
                self._cool_down(res["model"], res.get("slices") or [], at)
        while len(self.emitted) > REMEMBERED_REQUESTS:
            self.emitted.popitem(last=False)
        for res in results:  # oldest first: the latest result per slice wins
            for s in res.get("slices") or ():
                self.skipped_slices.discard((res["model"], s))
            if res["decision"] == Decision.SKIPPED and cause_of(res) == Cause.NO_HARM:
                self._skipped(res["model"], res.get("slices") or (), (res.get("finished_at") or 0) / 1000.0)

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
        ids = [a["alert_id"] for a in alerts]
        return {
            "schema_version": RETRAIN_REQUEST.version,
            "request_id": request_id_for(model, slices, plan.tier, ids),
            "alert_ids": ids,
            "model": model,
            "slices": slices,
            "modules": sorted(plan.modules),
            "tier": plan.tier,
            "snapshot": self.snapshot(alerts, slices, end_offsets),
            "priority": priority_for(alerts),
            "policy_version": POLICY_VERSION,
            "created_at": int(now * 1000),
            "alert_types": sorted({a["alert_type"] for a in alerts}),
        }

    def snapshot(self, alerts: list[Alert], slices: list[str], end_offsets: Mapping[int, int]) -> dict[str, Any]:
        """The DataSnapshot of a request (see the module docstring)."""
        cfg = self.config
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
                start = max(0, onset - cfg.reference_events)
                end = min(end, max(last + 1, start + cfg.snapshot_max_events))
            else:
                start = max(0, end - cfg.other_partition_events)
            if end > start:
                ranges.append({"partition": p, "start_offset": start, "end_offset": end})
        return {"topic": cfg.events_topic, "ranges": ranges, "slice_filter": list(slices), "labelled_only": True}

    def _admit(self, request: Request, alerts: list[Alert], now: float, root_id: str, escalations: int = 0) -> None:
        rid = request["request_id"]
        self.in_flight[rid] = now + self.config.in_flight_timeout_seconds
        for s in request["slices"]:
            key = (request["model"], s)
            self.busy_slices[key] = rid
            self.cooldown_until[key] = now + self.config.cooldown_seconds
            self.skipped_slices.discard(key)
        for a in alerts:
            self._remember_alert(a["alert_id"])
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
        request = {
            **old,
            "request_id": request_id_for(old["model"], slices, plan.tier, old["alert_ids"]),
            "slices": slices,
            "modules": sorted(plan.modules),
            "tier": plan.tier,
            "snapshot": {**old["snapshot"], "slice_filter": slices},
            "created_at": int(now * 1000),
        }
        if request["request_id"] in self.emitted:  # the planner could not go broader
            self._count("gave_up")
            return None
        self._admit(request, emitted.alerts, now, emitted.root_id, emitted.escalations + 1)
        return request

    def _skipped(self, model: str, slices: Iterable[str], now: float) -> None:
        """Triage found no harm: the slice cools down from now; concept alerts still pass."""
        self._cool_down(model, slices, now)
        self.skipped_slices.update((model, s) for s in slices)
        self._count("skipped")

    def _cool_down(self, model: str, slices: Iterable[str], now: float) -> None:
        for s in slices:
            key = (model, s)
            self.cooldown_until[key] = max(self.cooldown_until.get(key, -math.inf), now + self.config.cooldown_seconds)

    def _remember_alert(self, alert_id: str) -> None:
        self.requested_alerts[alert_id] = None
        self.requested_alerts.move_to_end(alert_id)
        while len(self.requested_alerts) > REMEMBERED_ALERT_IDS:
            self.requested_alerts.popitem(last=False)

    def _count(self, what: str) -> str:
        self.counters[what] = self.counters.get(what, 0) + 1
        return what
