"""The arithmetic and the table of ``driftctl bench throughput`` (pure, so unit-testable).

Rates from a consumer group's commit samples (first commit to the one covering the last
event), the workers' own accounts from their shutdown log lines, and the summary of a
comparison of the plain loop against groups of 1..N workers.
"""

from __future__ import annotations

import ast
import re
import statistics
from collections.abc import Sequence
from typing import Any

from runtime.kafka_groups import Sample


def rate_from_commits(samples: Sequence[tuple[float, int]], total: int) -> dict[str, Any]:
    """Events/s between the first commit and the one covering ``total``, from (seconds, committed).

    Pure, so the arithmetic is unit-testable; start-up is the time to the first commit.
    """
    progress = [(t, n) for t, n in samples if n > 0]
    done = next(((t, n) for t, n in progress if n >= total), None)
    if not progress or done is None:
        return {"events_per_second": None, "complete": False, "committed": max((n for _, n in samples), default=0)}
    t0, n0 = progress[0]
    span, counted = done[0] - t0, done[1] - n0
    if span <= 0 or counted <= 0:  # everything in one commit: fall back to start-to-done
        span, counted, approx = done[0], done[1], True
    else:
        approx = False
    return {
        "events_per_second": counted / span if span > 0 else None,
        "complete": True,
        "approximate": approx,
        "startup_seconds": t0,
        "total_seconds": done[0],
        "measured_events": counted,
        "measured_seconds": span,
    }


def rate_from_samples(samples: Sequence[Sample], total: int) -> dict[str, Any]:
    """:func:`rate_from_commits`, refusing a run that did not commit every event."""
    rate = rate_from_commits(samples, total)
    if not rate["complete"]:
        raise ValueError(f"the worker did not commit all {total} events: {list(samples)[-1:]}")
    return rate


def worker_seconds(log_text: str) -> dict[str, float] | None:
    """Where the worker's time went (consume / process / checkpoint), from its shutdown log line."""
    found = re.findall(r"seconds (\{[^}]*\})", log_text)
    return ast.literal_eval(found[-1]) if found else None


def worker_events(log_text: str) -> int | None:
    """How many events one worker processed, from its shutdown log line."""
    found = re.findall(r"; (\d+) events, seconds", log_text)
    return int(found[-1]) if found else None


def complete_group_samples(samples: Sequence[Sample], complete_at: float | None) -> list[Sample]:
    """The commit samples from the moment every worker held partitions: before that one worker
    may have run alone (a worker joins a second or two after another has started)."""
    if complete_at is None:
        return []
    return [s for s in samples if s.seconds >= complete_at]


def throughput_summary(
    plain: list[dict[str, Any]], by_workers: dict[int, list[dict[str, Any]]],
    with_sink: list[dict[str, Any]] = (), **extra: Any,
) -> dict[str, Any]:
    """The JSON of a comparison: median rates, the worker/plain-loop ratio, N workers against 1.

    Also events per CPU second (``cpu_ratio``: the worker's against the plain loop's): the work
    per event, which the machine's load moves much less than the wall-clock rates. With runs of
    one worker with the sink beside it (``with_sink``, one per round), ``sink_cost``: the median
    over rounds of the share of the lone worker's rate lost with the sink running (1 - with/alone).
    """
    rates = {n: [r["events_per_second"] for r in runs] for n, runs in by_workers.items()}
    one = statistics.median(rates[1])
    result: dict[str, Any] = {
        "worker_events_per_s": one,
        "workers_events_per_s": {str(n): statistics.median(v) for n, v in rates.items()},
        "rounds": len(rates[1]),
        **extra,
        "runs": {"workers": {str(n): runs for n, runs in by_workers.items()}},
    }
    per_cpu = {n: [r.get("events_per_cpu_second") for r in runs] for n, runs in by_workers.items()}
    if all(v is not None for v in per_cpu[1]):
        result["worker_events_per_cpu_s"] = statistics.median(per_cpu[1])
    if plain:
        base_rates = [p["events_per_second"] for p in plain]
        base = statistics.median(base_rates)
        result.update(baseline_events_per_s=base, baseline_runs_events_per_s=base_rates, ratio=one / base)
        result["runs"]["baseline"] = plain
        base_cpu = [p.get("events_per_cpu_second") for p in plain]
        if "worker_events_per_cpu_s" in result and all(v is not None for v in base_cpu):
            result["baseline_events_per_cpu_s"] = statistics.median(base_cpu)
            result["cpu_ratio"] = result["worker_events_per_cpu_s"] / result["baseline_events_per_cpu_s"]
    if with_sink:
        beside = [r["events_per_second"] for r in with_sink]
        result["worker_with_sink_events_per_s"] = statistics.median(beside)
        result["sink_cost"] = statistics.median(1 - a / b for a, b in zip(beside, rates[1]))
        sink_cpu = [r.get("sink_cpu_seconds") for r in with_sink]
        if all(c is not None for c in sink_cpu):
            result["sink_cpu_seconds"] = statistics.median(sink_cpu)
        result["runs"]["with_sink"] = list(with_sink)
    if len(rates) > 1:  # N workers against one in the same round, then the median over rounds
        result["scaling"] = {str(n): statistics.median(a / b for a, b in zip(v, rates[1])) for n, v in rates.items()}
    return result


def format_summary(result: dict[str, Any]) -> str:
    """The side-by-side table ``driftctl bench throughput`` prints (medians; every run in brackets)."""

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:,.0f}" for v in values)

    rows = []
    if "baseline_events_per_s" in result:
        rows.append(("plain loop (1 consumer, fastavro, 1 ADWIN per slice x feature)", result["baseline_events_per_s"],
                     f"1.00  (runs, first to last: {listed(result['baseline_runs_events_per_s'])})"))  # fmt: skip
    base = result.get("baseline_events_per_s")
    for n, rate in result["workers_events_per_s"].items():
        runs = result["runs"]["workers"][n]
        notes = [f"{rate / base:.2f} of the plain loop" if base else ""]
        if len(runs) > 1:
            notes.append(f"runs {listed([r['events_per_second'] for r in runs])}")
        cpu = [r.get("events_per_cpu_second") for r in runs]
        if all(c is not None for c in cpu):
            notes.append(f"{statistics.median(cpu):,.0f} events per CPU second")
        if n != "1":
            notes.append(f"{result['scaling'][n]:.2f}x one worker")
            notes.append(f"counted once all held partitions ({runs[-1]['committed_before_complete']:,} events before)")
            split = runs[-1].get("worker_events")
            if split:
                notes.append("events per worker " + "/".join(f"{v:,}" if v is not None else "?" for v in split.values()))
        label = f"streams worker{'s' if n != '1' else ''} x{n} (one group)"
        rows.append((label, rate, "; ".join(x for x in notes if x)))
        if n == "1" and "sink_cost" in result:
            runs = result["runs"]["with_sink"]
            cost = result["sink_cost"]
            notes = [f"{abs(cost):.0%} {'below' if cost >= 0 else 'above'} the worker alone (median of the rounds)"]
            if len(runs) > 1:
                notes.append(f"runs {listed([r['events_per_second'] for r in runs])}")
            if "sink_cpu_seconds" in result:
                notes.append(f"the sink used {result['sink_cpu_seconds']:.1f} CPU s meanwhile")
            rows.append(("streams worker x1 with the ClickHouse sink beside it", result["worker_with_sink_events_per_s"],
                         "; ".join(notes)))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    head = (f"driftctl bench throughput: {result['events']:,} events, {result['slices']} slices x "
            f"{result['features']} features, {result['rounds']} round(s) one after the other on one broker")  # fmt: skip
    lines = [head]
    lines += [f"  {label.ljust(width)}  {rate:>9,.0f} events/s  {note}" for label, rate, note in rows]
    if "cpu_ratio" in result:
        lines.append(f"  per CPU second (load-robust): plain loop {result['baseline_events_per_cpu_s']:,.0f}, "
                     f"one worker {result['worker_events_per_cpu_s']:,.0f} events: {result['cpu_ratio']:.2f}")  # fmt: skip
    return "\n".join(lines)
