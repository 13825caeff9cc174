"""``driftctl bench detect``: detection delay, misses, false alarms and throughput, vs Evidently.

One run:

1. builds a suite of public scenarios (:func:`build_suite`; river's Hyperplane world and a
   river model per slice, numpy shifts, fixed seeds): many slices, most stable, and a few
   drifts of every kind in :data:`deploy.scenarios.KINDS`, each on its own slice;
2. produces them to throw-away topics (a unique prefix, app id and sink group per run) and
   writes the same events as JSON lines;
3. starts the real services (streams worker + ClickHouse sink) and lets the one worker
   drain the topic; the rate is read from the worker group's committed offsets, first
   commit to the commit covering the last event (start-up excluded and reported apart);
4. reads every alert from the alerts topic, stops the services, deletes the topics;
5. runs Evidently's data-drift test on the same JSON lines, windowed per slice, in its own
   virtualenv (:mod:`deploy.evidently_runner`);
6. scores both with the same pure function (:func:`deploy.detect_scoring.score_alerts`) and prints them side by side.

Scoring rules: :mod:`deploy.detect_scoring`; the Evidently side: :mod:`deploy.bench_evidently`.
"""
from __future__ import annotations

import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from deploy.bench_evidently import EVIDENTLY_WINDOW, run_evidently
from deploy.bench_throughput import bench_settings
from deploy.detect_scoring import check_targets, evidently_alerts, format_report, score_alerts
from deploy.scenarios import KINDS, LABEL, Drift, Scenario, to_json_line
from deploy.throughput_report import rate_from_commits
from runtime.kafka_groups import watch_commits

SUITE_SIZES = {  # Drift.size per kind in the suite (meaning per kind: deploy.scenarios)
    "mean": 1.0,  # +1 reference sd
    "scale": 2.0,  # sd x 2
    "category_mix": 3.0,  # odds of the rarest device x 3 (15% -> 35%)
    "error_rate": 3.0,  # the model's error rate x 3 (about 8% -> 24%)
    "label_shift": 3.0,  # odds of label 1 x 3 (50% -> 75%)
    "missing": 2.0,  # 20% of the values become null
    "out_of_range": 0.5,  # 5% of the values become -999
}
DEVICE_LEVELS = {"device": {"ios": 0.5, "android": 0.35, "web": 0.15}}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the suite
def build_suite(quick: bool = False, seed: int = 2026) -> Scenario:
    """The benchmark's scenario: one drift per drifted slice, ``reps`` drifts of every kind.

    Full: 48 slices x 8,000 events (21 drifted, 27 stable), onsets between events 2,500
    and 4,500 of their slice. Quick: 10 slices x 3,000 events, one drift per kind (onsets 1,000
    to 1,600).
    """
    if quick:
        n_slices, per_slice, reps, first_onset = 10, 3000, 1, 1000
    else:
        n_slices, per_slice, reps, first_onset = 48, 8000, 3, 2500
    slices = tuple(f"slice-{i:02d}" for i in range(n_slices))
    numeric = ("amount", "latency_ms")
    # drifted slices spread over the list (every other one first), stable ones in between
    order = list(slices[::2]) + list(slices[1::2])
    drifts: list[Drift] = []
    k = 0
    for rep in range(reps):
        for j, kind in enumerate(KINDS):
            slice_ = order[k]
            k += 1
            onset = first_onset + rep * 700 + j * 100
            if kind in ("mean", "scale", "missing", "out_of_range"):
                feature: str | None = numeric[(rep + j) % 2]
            elif kind == "category_mix":
                feature = "device"
            elif kind == "label_shift":
                feature = LABEL
            else:
                feature = None
            drifts.append(Drift(slice_, feature, onset, kind, SUITE_SIZES[kind]))
    return Scenario(
        model="bench-model",
        slices=slices,
        features=numeric,
        events_per_slice=per_slice,
        drifts=tuple(drifts),
        seed=seed,
        interval_ms=10,
        categorical=("device",),
        category_levels=DEVICE_LEVELS,
    )


def slice_times(scenario: Scenario) -> dict[str, list[int]]:
    return {s: scenario.slice_event_times(s).tolist() for s in scenario.slices}

# --------------------------------------------------------------------------- Kafka side
def _retrying(fn, *args, attempts: int = 20, wait: float = 0.5):
    """Offsets queries right after group creation can fail with NOT_COORDINATOR and the like."""
    from confluent_kafka import KafkaException

    for i in range(attempts):
        try:
            return fn(*args)
        except KafkaException:
            if i == attempts - 1:
                raise
            time.sleep(wait)


def _read_topic(settings, topic: str, decode, idle: float = 3.0, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every record of ``topic`` from the beginning up to its current end (then ``idle`` s quiet)."""
    from runtime.kafka import read_topic, value_decoder

    return read_topic(
        settings, topic, decode=value_decoder(decode), idle=idle, timeout=timeout,
        on_error=lambda err: _say(f"  {err}"),
    )  # fmt: skip


def _drain(settings, group, total: int) -> list[tuple[float, int]]:
    """(seconds, events committed by the worker group) until all are, with a progress line."""

    def show(n: int) -> None:
        sys.stderr.write(f"\r  worker committed {n:,}/{total:,}")
        sys.stderr.flush()

    def alive() -> bool:
        return group.alive().get("streams", True)

    samples = watch_commits(settings, settings.app_id, settings.topics.events, total, alive, on_progress=show)
    best = max((n for _, n in samples), default=0)
    if best >= total:
        sys.stderr.write("\n")
    elif not alive():
        _say("\n  the streams worker exited early; see its log")
    else:
        _say(f"\n  no progress for 180s; giving up at {best:,}/{total:,}")
    return samples


# --------------------------------------------------------------------------- entry point
def run_detect_bench(
    settings, out: TextIO = sys.stdout, quick: bool = False, *, evidently: bool = True, keep_files: bool = False
) -> dict[str, Any]:
    """Run the detection benchmark against the configured broker; print the table, return the numbers."""
    from deploy.broker import LocalBroker
    from deploy.broker_config import LOCAL_HOSTS
    from deploy.produce import produce_events
    from deploy.services import start_services
    from runtime.kafka import end_offsets
    from runtime.topics import app_topics, delete_topics, ensure_topics
    from schemas.codec import ALERT, DEAD_LETTER

    t_start = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    run = bench_settings(settings, tag, app="bench-detect", sink=True)
    work = Path(settings.run_dir).resolve() / "bench" / tag
    work.mkdir(parents=True, exist_ok=True)
    scenario = build_suite(quick)
    expected = scenario.expected_alerts()
    _say(
        f"[1/5] scenario: {len(scenario.slices)} slices x {scenario.events_per_slice:,} events, "
        f"{len(expected)} drifts; generating (river Hyperplane + numpy, seed {scenario.seed})"
    )
    columns = scenario.columns()

    broker, started_broker = None, False
    host = settings.kafka_bootstrap.split(",")[0].rpartition(":")[0]
    if host in LOCAL_HOSTS:
        broker = LocalBroker(settings)
        if not broker.status().get("running"):
            _say(f"  starting the local broker at {settings.kafka_bootstrap}")
            broker.up()
            started_broker = True
    services = None
    events_file = work / "events.jsonl"
    try:
        ensure_topics(run)
        _say(f"[2/5] producing {scenario.total_events:,} events to {run.topics.events} (and {events_file.name})")
        with events_file.open("w") as fh:

            def tee():
                for ev in scenario.events(columns):
                    fh.write(to_json_line(ev))
                    yield ev

            produced = produce_events(run, tee())
        total = sum(_retrying(end_offsets, run, run.topics.events).values())
        _say("[3/5] one streams worker + the ClickHouse sink draining the topic")
        services = start_services(run, ("streams", "sink"), log_dir=work / "logs")
        samples = _drain(run, services, total)
        throughput = rate_from_commits(samples, total)
        alerts = _read_topic(run, run.topics.alerts, ALERT.decode)
        dead = _read_topic(run, run.topics.dlq, DEAD_LETTER.decode, idle=0.5)
        codes = services.stop()
        services = None
        _say(f"  {len(alerts)} alerts, {len(dead)} dead letters; services exited {codes}")
    finally:
        if services is not None:
            services.stop()
        try:
            delete_topics(run, run.topics.all() + app_topics(run))
        except Exception as exc:  # noqa: BLE001 - cleanup only
            _say(f"  could not delete the run's topics: {exc}")
        if started_broker and broker is not None:
            broker.down()

    times = slice_times(scenario)
    channels = scenario.channels()
    ours = score_alerts(expected, alerts, times, channels)
    evid: dict[str, Any] | None = None
    if evidently:
        _say(f"[4/5] Evidently's data-drift test per slice, {EVIDENTLY_WINDOW}-event windows")
        evid = run_evidently(settings, scenario, events_file, work / "evidently.json")
        if evid.get("ok"):
            evid["score"] = score_alerts(expected, evidently_alerts(evid.pop("flags")), times, channels)
        else:
            _say(f"  Evidently not run: {evid['error']}")
    else:
        _say("[4/5] Evidently skipped")
    _say("[5/5] scoring")
    result: dict[str, Any] = {
        "quick": quick,
        "tag": tag,
        "scenario": {
            "slices": len(scenario.slices),
            "events_per_slice": scenario.events_per_slice,
            "events": scenario.total_events,
            "produced": produced,
            "drifts": len(expected),
            "seed": scenario.seed,
            "channels": channels,
            "sizes": SUITE_SIZES,
        },
        "driftwatch": ours,
        "evidently": evid,
        "throughput": {**throughput, "dead_letters": len(dead), "exit_codes": codes},
        "targets": check_targets(ours, throughput),
    }
    result["seconds"] = time.monotonic() - t_start
    if not keep_files:
        events_file.unlink(missing_ok=True)
        shutil.rmtree(work / "clickhouse", ignore_errors=True)
    print(format_report(result), file=out, flush=True)
    return result