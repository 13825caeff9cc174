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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from deploy.produce import produce_events
from deploy.scenarios import Scenario
from deploy.services import start_services
from runtime.kafka import Sample, end_offsets, watch_commits
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
            samples = watch_commits(
                run, run.app_id, run.topics.events, total, lambda: all(group.alive().values()),
                start=start, poll=poll_seconds, stall=timeout, timeout=timeout,
            )  # fmt: skip
            if not all(group.alive().values()):
                raise RuntimeError(f"the streams worker exited early: {group.stop()}")
        finally:
            codes = group.stop()
        result = rate_from_samples(samples, total)
        result.update(events=produced, slices=slices, features=len(features), exit_codes=codes)
        if log_dir is not None:
            result["worker_seconds"] = worker_seconds((log_dir / "streams.log").read_text())
        return result
    finally:
        if not keep_topics:
            delete_topics(run, run.topics.all() + app_topics(run))


def main() -> None:
    """``python -m deploy.bench_throughput N``: one measurement against the configured broker."""
    import json
    import sys

    from schemas.settings import load_settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(measure_worker_throughput(load_settings(), n), indent=2))


if __name__ == "__main__":
    main()
