"""How many events per second the streams worker gets through, measured end to end.

The events are produced *before* the worker starts, so the producer does not compete
with the worker for CPU, and the clock runs from the worker's first committed offset to
the commit that covers the last event: process start-up, group join and table recovery
are reported separately instead of diluting the rate. The worker commits at its
checkpoints (a slice's ``snapshot_every_events``, or every second here), so the
granularity is one checkpoint; use at least 100k events.

:func:`compare_throughput` (``driftctl bench throughput --baseline --workers N``) measures,
in one run on one broker with the same events, the plain loop of deploy/bench_baseline.py (the
ceiling, before and after the workers) and groups of 1..N worker processes. Each group gets
topics of its own. One worker reads its (pre-encoded) events produced before it starts, as the
plain loop does; a group of several gets them only once every worker holds partitions
(otherwise the first to start would run alone while the others import their code), so the
producer shares the machine with them while they run.
Besides events per second it reports events per CPU second, which a loaded machine moves
much less.

Runs on throw-away topics (a unique prefix) with a unique app id, deleted afterwards. The
rate arithmetic and the summary table: :mod:`deploy.throughput_report`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from pydantic import SecretStr

from deploy.produce import produce_events
from deploy.scenarios import Scenario
from deploy.services import ServiceGroup, start_services
from deploy.throughput_report import (
    complete_group_samples,
    rate_from_samples,
    throughput_summary,
    worker_events,
    worker_seconds,
)
from runtime.kafka import end_offsets
from runtime.kafka_groups import group_assignment, watch_commits
from runtime.topics import app_topics, delete_topics, ensure_topics
from schemas.codec import EVENT
from schemas.settings import Settings


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


def bench_events(n_events: int, slices: int = 5, features: tuple[str, ...] = ("amount", "latency_ms")) -> list[dict]:
    """``n_events`` without drift, ``slices`` x ``features``."""
    scenario = Scenario(
        slices=tuple(f"slice-{i}" for i in range(slices)),
        features=features,
        events_per_slice=max(1, n_events // slices),
        drifts=(),
    )
    return list(scenario.events())


def produce_bench_events(
    run: Settings, n_events: int, slices: int = 5, features: tuple[str, ...] = ("amount", "latency_ms")
) -> int:
    """:func:`bench_events` to the run's events topic; returns how many the topic holds."""
    produce_events(run, bench_events(n_events, slices, features))
    return sum(end_offsets(run, run.topics.events).values())


def produce_encoded(settings: Settings, payloads: Sequence[tuple[bytes, bytes]]) -> None:
    """Already encoded (key, value) events to the events topic, as fast as librdkafka takes them
    (a few microseconds each: the workers they are racing lose little CPU to it)."""
    producer = Producer(settings.producer_config(**{"linger.ms": 20, "batch.num.messages": 10000}))
    failures: list[str] = []
    topic = settings.topics.events
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=lambda err, _m: err and failures.append(str(err)))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failures:
        raise RuntimeError(f"bench events not delivered: {failures[:3]}")


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


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class CpuWatch:
    """(seconds since ``start``, CPU seconds of all ``pids`` together), sampled on a thread: the
    CPU a window of the run cost, which a loaded machine changes far less than the wall time."""

    def __init__(self, pids: list[int], start: float, poll: float = 0.2):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(pids, start, poll), daemon=True)
        self._thread.start()

    def _watch(self, pids: list[int], start: float, poll: float) -> None:
        while not self._stop.is_set():
            used = [process_cpu_seconds(p) for p in pids]
            if any(u is None for u in used):
                return
            self.samples.append((time.monotonic() - start, sum(used)))
            self._stop.wait(poll)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def between(self, t0: float, t1: float) -> float | None:
        """CPU seconds used from ``t0`` to ``t1`` (the samples nearest to each)."""
        if not self.samples:
            return None
        at = [min(self.samples, key=lambda s, t=t: abs(s[0] - t))[1] for t in (t0, t1)]
        return at[1] - at[0]


def measure_workers(
    run: Settings, total: int, workers: int = 1, *, timeout: float = 300.0, poll_seconds: float = 0.2,
    log_dir: Path | None = None, payloads: Sequence[tuple[bytes, bytes]] | None = None, ahead: bool = True,
    sink: bool = False,
) -> dict[str, Any]:
    """``workers`` streams processes in one fresh group; the rate from the group's commits,
    counted from the moment every worker holds partitions. The group's changelog is deleted
    afterwards.

    Over the ``total`` events already in the run's topic, or, with ``payloads`` (encoded events,
    ``total`` of them), on fresh topics: produced before the workers start (``ahead``, as the
    plain loop gets them: the producer's CPU, 6.5 us an event here, is not taken from the
    workers' two cores while they run), or else only once every worker holds partitions, so no
    worker gets a head start. With ``ahead`` and more workers, the first to join may run alone
    for a moment: those events are not counted (``committed_before_complete``). With ``sink``
    (payloads only), the ClickHouse sink runs beside the workers, as in ``driftctl run``, on a
    store of its own, started first so that its start-up is over before the workers' clock runs.
    """
    if sink and payloads is None:
        raise ValueError("the sink is measured on fresh topics only: pass payloads")
    app_id = f"{run.app_id}-w{workers}{'s' if sink else ''}-{uuid.uuid4().hex[:4]}"
    group_settings = run.model_copy(update={"app_id": app_id, "worker_id": app_id})
    if payloads is not None:
        group_settings = bench_settings(group_settings, app=app_id, sink=sink).model_copy(update={"app_id": app_id})
        ensure_topics(group_settings)
    groups: list[ServiceGroup] = []
    watches: list[GroupWatch] = []
    cpus: list[CpuWatch] = []
    failed: list[Exception] = []
    try:
        if sink:
            groups.append(start_services(group_settings, ("sink",), log_dir=log_dir))
            watches.append(GroupWatch(group_settings, group_settings.sink_group, 1, time.monotonic()))
            _wait_for(watches[-1], groups, timeout, "the sink did not get partitions")
        if payloads is not None and ahead:
            produce_encoded(group_settings, payloads)
        start = time.monotonic()
        # the launcher of driftctl run --workers streams=N: distinct worker ids and metrics ports
        group = start_services(group_settings, ("streams",), log_dir=log_dir, workers={"streams": workers})
        groups.append(group)
        watch = GroupWatch(group_settings, group_settings.app_id, workers, start)
        watches.append(watch)
        cpus.append(CpuWatch([p.pid for p in group.procs.values()], start))  # the workers'
        if sink:
            cpus.append(CpuWatch([groups[0].procs["sink"].pid], start))  # the sink's
        if payloads is not None and not ahead:
            _wait_for(watch, groups, timeout, f"the {workers} workers did not all get partitions")

            def produce() -> None:
                try:
                    produce_encoded(group_settings, payloads)
                except Exception as exc:  # noqa: BLE001 - ends the watch below, reported there
                    failed.append(exc)

            threading.Thread(target=produce, daemon=True).start()  # beside the watch, so the first commits are seen
        samples = watch_commits(
            group_settings, group_settings.app_id, group_settings.topics.events, total,
            lambda: _alive(groups) and not failed, start=start, poll=poll_seconds,
            stall=timeout, timeout=timeout,
        )  # fmt: skip
        if failed:
            raise RuntimeError(f"producing the bench events failed: {failed[0]}")
        if not _alive(groups):
            raise RuntimeError(f"a service exited early: {[g.stop() for g in groups]}")
    finally:
        for w in watches:
            w.stop()
        for c in cpus:
            c.stop()
        codes = {name: code for g in groups for name, code in g.stop().items()}
        own_topics = group_settings.topics.all() if payloads is not None else []
        delete_topics(group_settings, own_topics + app_topics(group_settings))
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
    t0 = result["startup_seconds"]
    used = cpus[0].between(t0, result["total_seconds"])
    result["cpu_seconds"] = used
    result["events_per_cpu_second"] = result["measured_events"] / used if used else None
    if sink:  # the sink's own CPU over the same window
        result["sink_cpu_seconds"] = cpus[1].between(t0, result["total_seconds"])
    if log_dir is not None:
        logs = {name: (log_dir / f"{name}.log").read_text() for g in groups for name in g.procs}
        result["worker_seconds"] = {name: worker_seconds(text) for name, text in logs.items()}
        result["worker_events"] = {name: worker_events(text) for name, text in logs.items()}
    return result


def _alive(groups: list[ServiceGroup]) -> bool:
    return all(all(g.alive().values()) for g in groups)


def _wait_for(watch: GroupWatch, groups: list[ServiceGroup], timeout: float, failure: str) -> None:
    """Until ``watch``'s group is complete; ``failure`` if it is not in ``timeout`` or a service died."""
    deadline = time.monotonic() + timeout
    while watch.complete_at is None and time.monotonic() < deadline and _alive(groups):
        time.sleep(0.1)
    if watch.complete_at is None:
        raise RuntimeError(f"{failure} in {timeout:.0f}s")


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
            result["worker_seconds"] = result["worker_seconds"]["streams"]
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
    sink: bool = False,
) -> dict[str, Any]:
    """One run, one set of events on one broker: the plain loop (deploy/bench_baseline.py) and
    the streams worker(s) in groups of 1..``workers`` processes, ``rounds`` times; with
    ``sink``, also one worker with the ClickHouse sink beside it, right after the one alone.

    One after the other, never at once (they would share the CPUs): plain, 1, (1 + sink), ..,
    N workers, plain, 1, ..., plain. The plain loop brackets every round, so a change of the
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
    with_sink: list[dict[str, Any]] = []
    try:
        events = bench_events(n_events, slices, features)
        produce_events(run, events)  # the plain loop's topic
        total = sum(end_offsets(run, run.topics.events).values())
        payloads = [(e["slice"].encode(), EVENT.encode(e)) for e in events]  # the workers': the same events

        def plain_once() -> None:
            if baseline:
                plain.append(run_plain_loop(run, run.topics.events, total, f"{run.app_id}-plain-{len(plain)}", timeout))

        plain_once()
        for r in range(rounds):
            for n, runs in by_workers.items():
                # one worker reads events produced ahead, as the plain loop does; more would give
                # the first to join a head start, so theirs come once all hold partitions
                runs.append(measure_workers(run, total, n, timeout=timeout, log_dir=log_dir / f"r{r}w{n}",
                                            payloads=payloads, ahead=n == 1))  # fmt: skip
                if n == 1 and sink:
                    with_sink.append(measure_workers(run, total, 1, timeout=timeout, log_dir=log_dir / f"r{r}sink",
                                                     payloads=payloads, sink=True))  # fmt: skip
            plain_once()
    finally:
        delete_topics(run, run.topics.all() + app_topics(run))
    return throughput_summary(plain, by_workers, with_sink, events=total, slices=slices, features=len(features))


def main() -> None:
    """``python -m deploy.bench_throughput N``: one measurement against the configured broker."""
    import json

    from schemas.settings import load_settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(measure_worker_throughput(load_settings(), n), indent=2))


if __name__ == "__main__":
    main()
