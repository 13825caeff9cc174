"""How many events per second one streams worker gets through, measured end to end.

The events are produced *before* the worker starts, so the producer does not compete
with the worker for CPU, and the clock runs from the worker's first committed offset to
the commit that covers the last event: process start-up, group join and table recovery
are reported separately instead of diluting the rate. The worker commits at its
checkpoints (a slice's ``snapshot_every_events``, or every second here), so the
granularity is one checkpoint; use at least 100k events.

Runs on throw-away topics (a unique prefix) with a unique app id, deleted afterwards.
"""

from __future__ import annotations

import ast
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from deploy.kafka_util import end_offsets
from deploy.produce import produce_events
from deploy.scenarios import Scenario
from deploy.services import ServiceGroup, start_services
from deploy.topics_admin import delete_topics, ensure_topics
from schemas.settings import Settings


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the worker process started
    committed: int  # events of the run covered by the group's committed offsets


def rate_from_samples(samples: list[Sample], total: int) -> dict[str, float]:
    """Steady-state rate between the first and the last commit, from (time, committed) samples.

    Pure, so the arithmetic is unit-testable; start-up is the time to the first commit.
    """
    progress = [s for s in samples if s.committed > 0]
    if not progress or progress[-1].committed < total:
        raise ValueError(f"the worker did not commit all {total} events: {samples[-1:]}")
    first = progress[0]
    last = next(s for s in progress if s.committed >= total)
    span = last.seconds - first.seconds
    counted = last.committed - first.committed
    return {
        "events_per_second": counted / span if span > 0 else float("nan"),
        "startup_seconds": first.seconds,
        "total_seconds": last.seconds,
        "measured_events": counted,
        "measured_seconds": span,
    }


def worker_seconds(log_text: str) -> dict[str, float] | None:
    """Where the worker's time went (consume / process / checkpoint), from its shutdown log line."""
    found = re.findall(r"seconds (\{[^}]*\})", log_text)
    return ast.literal_eval(found[-1]) if found else None


def bench_settings(settings: Settings, tag: str | None = None) -> Settings:
    tag = tag or uuid.uuid4().hex[:8]
    return settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}-bench-{tag}",
            "app_id": f"bench-{tag}",
            # the last commit comes at most this long after the last event was processed
            "snapshot_every_seconds": min(settings.snapshot_every_seconds, 1.0),
        }
    )


def _watch(
    settings: Settings, group: ServiceGroup, start: float, total: int, timeout: float, poll: float
) -> list[Sample]:
    """(time, committed) samples from one long-lived probe: a new client per look costs the worker CPU."""
    topic = settings.topics.events
    probe = Consumer(settings.confluent_config(**{"group.id": settings.app_id, "enable.auto.commit": False}))
    try:
        parts = [
            TopicPartition(topic, p) for p in probe.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        samples: list[Sample] = []
        while time.monotonic() < start + timeout:
            if not all(group.alive().values()):
                raise RuntimeError(f"the streams worker exited early: {group.stop()}")
            try:
                done = probe.committed(parts, timeout=10)  # reads the group's offsets; never joins it
            except KafkaException:  # the group coordinator is not ready yet
                done = []
            samples.append(Sample(time.monotonic() - start, sum(max(tp.offset, 0) for tp in done)))
            if samples[-1].committed >= total:
                break
            time.sleep(poll)
        return samples
    finally:
        probe.close()


def _app_topics(settings: Settings) -> list[str]:
    """The app's own topics (the detector-state changelog; faust's, from older versions)."""
    from confluent_kafka.admin import AdminClient

    names = AdminClient(settings.confluent_config()).list_topics(timeout=10).topics
    return [n for n in names if n.startswith(settings.app_id + "-")]


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
        scenario = Scenario(
            slices=tuple(f"slice-{i}" for i in range(slices)),
            features=features,
            events_per_slice=max(1, n_events // slices),
            drifts=(),
        )
        produced = produce_events(run, scenario.events())
        total = sum(end_offsets(run, run.topics.events).values())
        start = time.monotonic()
        group = start_services(run, ("streams",), log_dir=log_dir)
        try:
            samples = _watch(run, group, start, total, timeout, poll_seconds)
        finally:
            codes = group.stop()
        result = rate_from_samples(samples, total)
        result.update(events=produced, slices=slices, features=len(features), exit_codes=codes)
        if log_dir is not None:
            result["worker_seconds"] = worker_seconds((log_dir / "streams.log").read_text())
        return result
    finally:
        if not keep_topics:
            delete_topics(run, run.topics.all() + _app_topics(run))


def main() -> None:
    """``python -m streams.throughput N``: one measurement against the configured broker."""
    import json
    import sys

    from schemas.settings import load_settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(measure_worker_throughput(load_settings(), n), indent=2))


if __name__ == "__main__":
    main()
