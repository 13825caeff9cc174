"""Scoring of ``driftctl bench detect`` (pure: alerts vs the planned drifts) and its report table.

Scoring (both systems, same terms):

- an alert *detects* a planned drift when slice, feature and alert type match and its
  ``window_end_event_time`` is at or after the onset; the *delay* is the number of events of
  that slice from the onset to the window end (event-time order). Later matching alerts are
  repeats. An alert on the drifted (slice, feature) after the onset but of another type is a
  *wrong-type* detection (reported, not counted as detected). Alerts a drift's kind is
  allowed to cause elsewhere (``ExpectedAlert.side_effects``) are *collateral*.
- every other alert is a *false alarm*, including alerts on a drifted pair before its onset.
- *stable (slice, feature) events*: events x monitored channels (numeric and categorical
  features, the label, performance) over the pairs and stretches with no drift planned
  (a drifted pair counts up to its onset).
"""


from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from deploy.scenarios import ALERT_FOR_KIND, LABEL, ExpectedAlert

TARGET_MEDIAN_DELAY = 300  # events of the drifted slice
TARGET_FALSE_ALARMS_PER_MILLION = 1.0
TARGET_EVENTS_PER_SECOND = 20_000


# --------------------------------------------------------------------------- scoring (pure)
def stable_pair_events(
    expected: Sequence[ExpectedAlert], events_per_slice: Mapping[str, int], channels: Sequence[str | None]
) -> int:
    """Events x channels over (slice, channel) pairs with no drift planned; a drifted pair, or a
    pair a drift may affect as a side effect, counts up to its (earliest) onset."""
    limit: dict[tuple[str, str | None], int] = {}
    for e in expected:
        keys = [(e.slice, e.feature)] + [(e.slice, f) for _, f in e.side_effects]
        for key in keys:
            limit[key] = min(limit.get(key, e.onset_index), e.onset_index)
    total = 0
    for s, n in events_per_slice.items():
        for c in channels:
            total += min(n, limit.get((s, c), n))
    return total


def score_alerts(
    expected: Sequence[ExpectedAlert],
    alerts: Iterable[Mapping[str, Any]],
    times: Mapping[str, Sequence[int]],
    channels: Sequence[str | None],
) -> dict[str, Any]:
    """Score alerts against ground truth (see the module docstring for the rules).

    ``times``: each slice's event times, ascending (one per event of the slice);
    ``channels``: the monitored features per slice (None = performance).
    Alerts need ``slice``, ``feature``, ``alert_type``, ``window_end_event_time`` and
    optionally ``alert_id`` (duplicates by id are counted once).
    """
    seen_ids: set[str] = set()
    by_pair: dict[tuple[str, str | None], list[ExpectedAlert]] = defaultdict(list)
    for e in expected:
        by_pair[(e.slice, e.feature)].append(e)
    first: dict[int, int] = {}  # id(expected) -> slice index of its first matching alert
    wrong: dict[int, tuple[int, str]] = {}
    repeats = collateral = foreign = duplicates = 0
    false_alarms: list[dict[str, Any]] = []
    for a in alerts:
        aid = a.get("alert_id")
        if aid is not None:
            if aid in seen_ids:
                duplicates += 1
                continue
            seen_ids.add(aid)
        s, f, t = a["slice"], a.get("feature"), int(a["window_end_event_time"])
        if s not in times:
            foreign += 1
            continue
        idx = bisect.bisect_right(times[s], t) - 1  # the slice's last event at or before the window end
        started = [e for e in by_pair.get((s, f), ()) if e.onset_event_time <= t]
        match = [e for e in started if e.alert_type == a["alert_type"]]
        if match:
            e = min(match, key=lambda e: e.onset_index)
            if id(e) in first:
                repeats += 1
                first[id(e)] = min(first[id(e)], idx)
            else:
                first[id(e)] = idx
            continue
        if started:
            e = started[0]
            if id(e) not in wrong or idx < wrong[id(e)][0]:
                wrong[id(e)] = (idx, a["alert_type"])
            else:
                repeats += 1
            continue
        if any(
            e.slice == s and e.onset_event_time <= t and (a["alert_type"], f) in e.side_effects for e in expected
        ):
            collateral += 1
            continue
        false_alarms.append(
            {"slice": s, "feature": f, "alert_type": a["alert_type"], "index": idx, "window_end_event_time": t}
        )

    per_drift = []
    for e in expected:
        d = first.get(id(e))
        w = wrong.get(id(e))
        per_drift.append(
            {
                **e.as_dict(),
                "detected": d is not None,
                "delay": None if d is None else d - e.onset_index,
                "wrong_type": None if w is None or d is not None else {"delay": w[0] - e.onset_index, "alert_type": w[1]},
            }
        )
    kinds = {}
    for kind in dict.fromkeys([e.kind for e in expected]):
        rows = [r for r in per_drift if r["kind"] == kind]
        delays = sorted(r["delay"] for r in rows if r["detected"])
        kinds[kind] = {
            "alert_type": ALERT_FOR_KIND[kind],
            "drifts": len(rows),
            "detected": len(delays),
            "missed": len(rows) - len(delays),
            "wrong_type": sum(1 for r in rows if r["wrong_type"] is not None),
            "median_delay": statistics.median(delays) if delays else None,
            "max_delay": max(delays) if delays else None,
            "delays": delays,
        }
    stable = stable_pair_events(expected, {s: len(v) for s, v in times.items()}, channels)
    return {
        "kinds": kinds,
        "drifts": per_drift,
        "false_alarms": len(false_alarms),
        "false_alarms_per_million": len(false_alarms) / stable * 1e6 if stable else math.nan,
        "false_alarm_types": dict(Counter(fa["alert_type"] for fa in false_alarms)),
        "false_alarm_list": false_alarms[:50],
        "stable_pair_events": stable,
        "repeats": repeats,
        "collateral": collateral,
        "foreign": foreign,
        "duplicates": duplicates,
    }


def evidently_alerts(flags: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evidently's flagged (slice, column, window)s as alerts: features -> DATA_DRIFT,
    label -> LABEL_DRIFT, the error column -> PERFORMANCE_DRIFT (feature None)."""
    out = []
    for fl in flags:
        col = fl["column"]
        if col == "error":
            feature, kind = None, "PERFORMANCE_DRIFT"
        elif col == LABEL:
            feature, kind = LABEL, "LABEL_DRIFT"
        else:
            feature, kind = col, "DATA_DRIFT"
        out.append(
            {
                "alert_id": f"evidently/{fl['slice']}/{col}/{fl['window']}",
                "slice": fl["slice"],
                "feature": feature,
                "alert_type": kind,
                "window_end_event_time": fl["end_event_time"],
            }
        )
    return out


def check_targets(ours: Mapping[str, Any], throughput: Mapping[str, Any]) -> dict[str, bool]:
    kinds = ours["kinds"]
    eps = throughput.get("events_per_second")
    return {
        "every kind detected, median delay < 300": all(
            k["missed"] == 0 and k["median_delay"] is not None and k["median_delay"] < TARGET_MEDIAN_DELAY
            for k in kinds.values()
        ),
        "false alarms <= 1 per million": ours["false_alarms_per_million"] <= TARGET_FALSE_ALARMS_PER_MILLION,
        "throughput >= 20,000 events/s": bool(eps and eps >= TARGET_EVENTS_PER_SECOND),
    }


# --------------------------------------------------------------------------- report
def _fmt(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_report(result: Mapping[str, Any]) -> str:
    ours, evid = result["driftwatch"], result.get("evidently")
    sc = result["scenario"]
    lines = [
        (
            f"driftctl bench detect{' (quick)' if result['quick'] else ''}: {sc['slices']} slices x "
            f"{sc['events_per_slice']:,} events = {sc['events']:,} events, {sc['drifts']} drifts "
            f"({sc['drifts'] // len(ours['kinds'])} per kind) on their own slices, seed {sc['seed']}"
        ),
        (
            f"stable (slice, feature) events: {ours['stable_pair_events']:,} "
            f"(channels per slice: {', '.join(c or 'performance' for c in sc['channels'])})"
        ),
        (
            "delay = events of the drifted slice from the onset to the alert's window end; "
            "det = detected with the right type / drifts; wt = alerted with another type"
        ),
        "",
    ]
    ev_name = f"Evidently {evid['version']} ({evid['window']}-event windows)" if evid and evid.get("ok") else "Evidently"
    head = f"{'kind':<13} {'expected alert':<18}| {'driftwatch':^34} | {ev_name:^34}"
    sub = f"{'':<13} {'':<18}| {'det':>5} {'miss':>4} {'wt':>3} {'median':>8} {'max':>8}   | {'det':>5} {'miss':>4} {'wt':>3} {'median':>8} {'max':>8}"
    lines += [head, sub, "-" * len(sub)]
    for kind, k in ours["kinds"].items():
        row = (
            f"{kind:<13} {k['alert_type']:<18}| {k['detected']:>2}/{k['drifts']:<2} {k['missed']:>4} {k['wrong_type']:>3} "
            f"{_fmt(k['median_delay']):>8} {_fmt(k['max_delay']):>8}   |"
        )
        if evid and evid.get("ok"):
            e = evid["score"]["kinds"][kind]
            row += (
                f" {e['detected']:>2}/{e['drifts']:<2} {e['missed']:>4} {e['wrong_type']:>3} "
                f"{_fmt(e['median_delay']):>8} {_fmt(e['max_delay']):>8}"
            )
        else:
            row += "  (not run)"
        lines.append(row)
    lines.append("-" * len(sub))
    fa = f"{ours['false_alarms_per_million']:.2f} ({ours['false_alarms']} alarms"
    fa += (", " + ", ".join(f"{t} {n}" for t, n in sorted(ours["false_alarm_types"].items())) + ")") if ours[
        "false_alarms"
    ] else ")"
    line = f"{'false alarms per million stable (slice, feature) events':<56} driftwatch {fa}"
    if evid and evid.get("ok"):
        es = evid["score"]
        line += f" | Evidently {es['false_alarms_per_million']:.2f} ({es['false_alarms']} flags)"
    lines.append(line)
    lines.append(
        f"{'other alerts':<56} driftwatch: {ours['repeats']} repeats on drifted pairs, "
        f"{ours['collateral']} collateral, {ours['duplicates']} duplicates"
        + (
            f" | Evidently: {evid['score']['repeats']} repeats, {evid['score']['collateral']} collateral"
            if evid and evid.get("ok")
            else ""
        )
    )
    tp = result["throughput"]
    if tp.get("events_per_second"):
        lines.append(
            f"{'throughput, one worker with the sink running':<56} {tp['events_per_second']:,.0f} events/s "
            f"({tp['measured_events']:,} events in {tp['measured_seconds']:.1f}s after the first commit; "
            f"start-up {tp['startup_seconds']:.1f}s)"
        )
    else:
        lines.append(f"{'throughput':<56} not measured: the worker did not commit every event ({tp})")
    if evid and evid.get("ok"):
        lines.append(
            f"{'Evidently run':<56} {evid['windows']} windows x {len(evid['methods'])} columns in "
            f"{evid['seconds']:.1f}s; tests: " + ", ".join(f"{c} {m}" for c, m in evid["methods"].items())
        )
    elif evid:
        lines.append(f"{'Evidently':<56} not run: {evid.get('error')}")
    lines.append("")
    for name, ok in result["targets"].items():
        lines.append(f"target {name:<44} {'PASS' if ok else 'FAIL'}")
    lines.append(f"bench took {result['seconds']:.0f}s")
    return "\n".join(lines)
