"""How many events per second the streams worker gets through, measured end to end.

The events are produced *before* the worker starts, so the producer does not compete
with the worker for CPU, and the clock runs from the worker's first committed offset to
the commit that covers the last event: process start-up, group join and table recovery
are reported separately instead of diluting the rate. The worker commits at its
checkpoints (a slice's ``snapshot_every_events``, or every second here), so the
granularity is one checkpoint; use at least 100k events.

:func:`compare_throughput` (``driftctl bench throughput --baseline --workers N``) measures,
in one run on one topic of events, the plain loop of deploy/bench_baseline.py (the ceiling,
before and after the workers) and groups of 1..N worker processes. With several workers the
clock starts once every one of them holds partitions: before that, the first one to join
runs alone.

Runs on throw-away topics (a unique prefix) with a unique app id, deleted afterwards.
"""

from __future__ import annotations

import ast
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from pydantic import SecretStr

from deploy.produce import produce_events
from deploy.scenarios import Scenario
from deploy.services import ServiceGroup, settings_env
from runtime.kafka import Sample, end_offsets, group_assignment, watch_commits
from runtime.topics import app_topics, delete_topics, ensure_topics
from schemas.settings import Settings


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


def bench_settings(settings: Settings, tag: str | None = None, *, app: str = "bench", sink: bool = False) -> Settings:
    """Settings of one benchmark run: throw-away topics (a unique prefix) and a unique app id,
    so runs never see each other's records, offsets or detector state.

    With ``sink``, also a sink group of its own and, for the embedded ClickHouse, a store of
    its own under ``run_dir/bench/<tag>`` (chdb allows one process per data path).
    """
    tag = tag or uuid.uuid4().hex[:8]
    update: dict[str, Any] = {
        "topic_prefix": f"{settings.topic_prefix}-bench-{tag}",
        "app_id": f"{app}-{tag}",
        # the last commit comes at most this long after the last event was processed
        "snapshot_every_seconds": min(settings.snapshot_every_seconds, 1.0),
    }
    if sink:
        update["sink_group"] = f"bench-sink-{tag}"
        if not settings.clickhouse_dsn.get_secret_value().strip():
            store = Path(settings.run_dir).resolve() / "bench" / tag / "clickhouse"
            update["clickhouse_dsn"] = SecretStr(f"chdb:{store}")
    return settings.model_copy(update=update)


def start_streams_workers(settings: Settings, n: int, log_dir: Path | None = None) -> ServiceGroup:
    """``n`` streams workers as separate processes of one consumer group (``app_id``), each with
    its own ``DRIFT_WORKER_ID`` and, with ``log_dir``, its own log ``streams-<i>.log``."""
    group = ServiceGroup()
    argv = [sys.executable, "-m", "deploy.services", "streams"]
    for i in range(1, n + 1):
        env = {**settings_env(settings), "DRIFT_WORKER_ID": f"{settings.app_id}-{i}"}
        name = f"streams-{i}"
        if log_dir is None:
            group.procs[name] = subprocess.Popen(argv, env=env)
            continue
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{name}.log", "ab") as out:  # the child keeps its own copy of the fd
            group.procs[name] = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return group


def worker_events(log_text: str) -> int | None:
    """How many events one worker processed, from its shutdown log line."""
    found = re.findall(r"; (\d+) events, seconds", log_text)
    return int(found[-1]) if found else None


def produce_bench_events(
    run: Settings, n_events: int, slices: int = 5, features: tuple[str, ...] = ("amount", "latency_ms")
) -> int:
    """``n_events`` without drift (``slices`` x ``features``) to the run's events topic; returns
    how many the topic holds."""
    scenario = Scenario(
        slices=tuple(f"slice-{i}" for i in range(slices)),
        features=features,
        events_per_slice=max(1, n_events // slices),
        drifts=(),
    )
    produce_events(run, scenario.events())
    return sum(end_offsets(run, run.topics.events).values())


class GroupWatch:
    """When a consumer group first became stable with ``size`` members that each hold partitions,
    in seconds since ``start`` (None until then); polled on a thread of the benchmark process."""

    def __init__(self, settings: Settings, group: str, size: int, start: float, poll: float = 0.2):
        self.complete_at: float | None = None
        self.assignment: dict[str, list[tuple[str, int]]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(settings, group, size, start, poll), daemon=True)
        self._thread.start()

    def _watch(self, settings: Settings, group: str, size: int, start: float, poll: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(settings.confluent_config())
        while not self._stop.is_set():
            try:
                members = group_assignment(admin, group)
            except KafkaException:  # the group does not exist yet, or its coordinator is moving
                members = None
            if members is not None and len(members) == size and all(members.values()):
                self.complete_at, self.assignment = time.monotonic() - start, members
                return
            self._stop.wait(poll)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def complete_group_samples(samples: Sequence[Sample], complete_at: float | None) -> list[Sample]:
    """The commit samples from the moment every worker held partitions: before that one worker
    may have run alone (a worker joins a second or two after another has started)."""
    if complete_at is None:
        return []
    return [s for s in samples if s.seconds >= complete_at]


def measure_workers(
    run: Settings, total: int, workers: int = 1, *, timeout: float = 300.0, poll_seconds: float = 0.2,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """``workers`` streams processes in one fresh group over the ``total`` events already in the
    run's topic; the rate from the group's commits, counted from the moment every worker holds
    partitions. The group's changelog is deleted afterwards."""
    group_settings = run.model_copy(update={"app_id": f"{run.app_id}-w{workers}-{uuid.uuid4().hex[:4]}"})
    start = time.monotonic()
    group = start_streams_workers(group_settings, workers, log_dir=log_dir)
    watch = GroupWatch(group_settings, group_settings.app_id, workers, start)
    try:
        samples = watch_commits(
            group_settings, group_settings.app_id, run.topics.events, total,
            lambda: all(group.alive().values()), start=start, poll=poll_seconds, stall=timeout, timeout=timeout,
        )  # fmt: skip
        if not all(group.alive().values()):
            raise RuntimeError(f"a streams worker exited early: {group.stop()}")
    finally:
        watch.stop()
        codes = group.stop()
        delete_topics(group_settings, app_topics(group_settings))
    if not samples or samples[-1].committed < total:
        raise ValueError(f"the workers did not commit all {total} events: {samples[-1:]}")
    together = complete_group_samples(samples, watch.complete_at)
    if len(together) < 2 or together[0].committed >= total:
        raise ValueError(
            f"the {workers} workers never ran together (group complete at {watch.complete_at}s, all "
            f"{total} events committed at {samples[-1].seconds:.1f}s): use more events"
        )
    result = rate_from_samples(together, total)
    result.update(
        workers=workers, exit_codes=codes, group_complete_seconds=watch.complete_at,
        committed_before_complete=together[0].committed, assignment=watch.assignment,
    )  # fmt: skip
    if log_dir is not None:
        logs = {name: (log_dir / f"{name}.log").read_text() for name in group.procs}
        result["worker_seconds"] = {name: worker_seconds(text) for name, text in logs.items()}
        result["worker_events"] = {name: worker_events(text) for name, text in logs.items()}
    return result


def measure_worker_throughput(
    settings: Settings,
    n_events: int,
    *,
    slices: int = 5,
    features: tuple[str, ...] = ("amount", "latency_ms"),
    timeout: float = 300.0,
    poll_seconds: float = 0.2,
    log_dir: Path | None = None,
    keep_topics: bool = False,
) -> dict[str, Any]:
    """Produce ``n_events`` (no drift) to fresh topics, run one worker over them, report the rate."""
    run = bench_settings(settings)
    ensure_topics(run)
    try:
        total = produce_bench_events(run, n_events, slices, features)
        result = measure_workers(run, total, 1, timeout=timeout, poll_seconds=poll_seconds, log_dir=log_dir)
        result.update(events=total, slices=slices, features=len(features))
        if log_dir is not None:
            result["worker_seconds"] = result["worker_seconds"]["streams-1"]
        return result
    finally:
        if not keep_topics:
            delete_topics(run, run.topics.all() + app_topics(run))


def compare_throughput(
    settings: Settings,
    n_events: int,
    *,
    baseline: bool = True,
    workers: int = 1,
    rounds: int = 1,
    slices: int = 5,
    features: tuple[str, ...] = ("amount", "latency_ms"),
    timeout: float = 300.0,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """One run, one set of events on one broker: the plain loop (deploy/bench_baseline.py) and
    the streams worker(s) in groups of 1..``workers`` processes, ``rounds`` times.

    One after the other, never at once (they would share the CPUs): plain, 1, .., N workers,
    plain, 1, .., N, ..., plain. The plain loop brackets every round, so a change of the
    machine's load shows as a spread between its rates; the summary takes medians.
    """
    from deploy.bench_baseline import run_plain_loop

    if workers < 1 or rounds < 1:
        raise ValueError(f"workers and rounds must be at least 1, got {workers} and {rounds}")
    run = bench_settings(settings)
    log_dir = log_dir or Path(run.run_dir).resolve() / "bench" / run.app_id
    ensure_topics(run)
    plain: list[dict[str, Any]] = []
    by_workers: dict[int, list[dict[str, Any]]] = {n: [] for n in range(1, workers + 1)}
    try:
        total = produce_bench_events(run, n_events, slices, features)

        def plain_once() -> None:
            if baseline:
                plain.append(run_plain_loop(run, run.topics.events, total, f"{run.app_id}-plain-{len(plain)}", timeout))

        plain_once()
        for r in range(rounds):
            for n, runs in by_workers.items():
                runs.append(measure_workers(run, total, n, timeout=timeout, log_dir=log_dir / f"r{r}w{n}"))
            plain_once()
    finally:
        delete_topics(run, run.topics.all() + app_topics(run))
    return throughput_summary(plain, by_workers, events=total, slices=slices, features=len(features))


def throughput_summary(
    plain: list[dict[str, Any]], by_workers: dict[int, list[dict[str, Any]]], **extra: Any
) -> dict[str, Any]:
    """The JSON of a comparison: median rates, the worker/plain-loop ratio, N workers against 1."""
    rates = {n: [r["events_per_second"] for r in runs] for n, runs in by_workers.items()}
    one = statistics.median(rates[1])
    result: dict[str, Any] = {
        "worker_events_per_s": one,
        "workers_events_per_s": {str(n): statistics.median(v) for n, v in rates.items()},
        "rounds": len(rates[1]),
        **extra,
        "runs": {"workers": {str(n): runs for n, runs in by_workers.items()}},
    }
    if plain:
        base_rates = [p["events_per_second"] for p in plain]
        base = statistics.median(base_rates)
        result.update(baseline_events_per_s=base, baseline_runs_events_per_s=base_rates, ratio=one / base)
        result["runs"]["baseline"] = plain
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
        if n != "1":
            notes.append(f"{result['scaling'][n]:.2f}x one worker")
            notes.append(f"counted once all held partitions ({runs[-1]['committed_before_complete']:,} events before)")
            split = runs[-1].get("worker_events")
            if split:
                notes.append("events per worker " + "/".join(f"{v:,}" if v is not None else "?" for v in split.values()))
        label = f"streams worker{'s' if n != '1' else ''} x{n} (one group)"
        rows.append((label, rate, "; ".join(x for x in notes if x)))
    width = max(len(r[0]) for r in rows)
    head = (f"driftctl bench throughput: {result['events']:,} events, {result['slices']} slices x "
            f"{result['features']} features, {result['rounds']} round(s) one after the other on one broker")  # fmt: skip
    lines = [head]
    lines += [f"  {label.ljust(width)}  {rate:>9,.0f} events/s  {note}" for label, rate, note in rows]
    return "\n".join(lines)


def main() -> None:
    """``python -m deploy.bench_throughput N``: one measurement against the configured broker."""
    import json
    import sys

    from schemas.settings import load_settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(measure_worker_throughput(load_settings(), n), indent=2))


if __name__ == "__main__":
    main()
