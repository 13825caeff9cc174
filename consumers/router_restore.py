"""A restarted router's state, rebuilt from the requests, results and alerts topics.

Apart from the policy (:mod:`consumers.router`) because it runs once, at start, on records the
service reads back (the latest ``router_restore_events`` per partition): cooldowns, in-flight
slots, the requested alert ids (so a replayed alert is a duplicate, not a second request) and
what is needed to escalate a request made before the restart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from consumers.router import REMEMBERED_REQUESTS, Emitted, Router, cools_down
from consumers.router_requests import Alert, Request
from schemas.retraining import Cause, Decision, cause_of


def restore(router: Router, requests: Iterable[Request], results: Iterable[Mapping[str, Any]], now: float,
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
            router.emitted[req["request_id"]] = Emitted(
                req, [by_id[aid] for aid in req["alert_ids"]], chain[0], chain.index(req["request_id"]))
            router.emitted.move_to_end(req["request_id"])
        for aid in req["alert_ids"]:
            router.remember_alert(aid)
        for s in req["slices"]:
            key = (req["model"], s)
            router.cooldown_until[key] = max(router.cooldown_until.get(key, -math.inf), created + router.config.cooldown_seconds)
            router.observe_slice(*key)
        deadline = created + router.config.in_flight_timeout_seconds
        if req["request_id"] not in done and now < deadline:
            router.in_flight[req["request_id"]] = deadline
            for s in req["slices"]:
                router.busy_slices[(req["model"], s)] = req["request_id"]
    for res in latest.values():  # rollouts still deciding hold their slices; live endings cool them
        at = (res.get("finished_at") or 0) / 1000.0
        if res["decision"] == "CANDIDATE" and now < at + router.config.rollout_hold_seconds:
            router.rolling_out[res["request_id"]] = at + router.config.rollout_hold_seconds
            for s in res.get("slices") or []:
                router.busy_slices[(res["model"], s)] = res["request_id"]
        elif cools_down(res):
            router.cool_down(res["model"], res.get("slices") or [], at)
    while len(router.emitted) > REMEMBERED_REQUESTS:
        router.emitted.popitem(last=False)
    for res in results:  # oldest first: the latest result per slice wins
        for s in res.get("slices") or ():
            router.skipped_slices.discard((res["model"], s))
        if res["decision"] == Decision.SKIPPED and cause_of(res) == Cause.NO_HARM:
            router.mark_skipped(res["model"], res.get("slices") or (), (res.get("finished_at") or 0) / 1000.0)
