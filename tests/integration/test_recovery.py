"""A stopped or killed streams worker resumes with its detectors, not from zero.

Each case writes the first part of a stream, runs a worker over it, stops it (SIGTERM: clean
shutdown; SIGKILL: a crash with work past the last checkpoint), writes the rest (a mean
shift on one slice well after the restart point), starts the worker again with the same
app id and lets it finish. An uninterrupted worker (another app id) then reads the whole
stream. Alert ids are deterministic (slice, feature, detector, topic, partition, offset),
so the restarted app must produce exactly the same alert ids as the uninterrupted one,
each once, with the same content but for ``detected_at`` and ``worker_id``.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from deploy.produce import produce_events
from deploy.scenarios import Drift, Scenario
from deploy.services import ServiceGroup, start_services
from runtime.kafka import committed_offsets, end_offsets, read_topic, value_decoder
from runtime.topics import ensure_topics
from schemas.codec import ALERT
from schemas.settings import Settings

SPLIT = 1200  # events per slice before the restart
DRIFT_AT = 2000  # the mean shift starts here, well after the restart
RESTORED = re.compile(r"restored detector state for model=(\S+) slice=(\S+): (\d+) events")
RUN_ONLY = {"detected_at", "worker_id"}  # what may differ between two runs of the same data


def scenario() -> Scenario:
    return Scenario(events_per_slice=2600, drifts=(Drift("eu-west", "amount", DRIFT_AT, size=2.0),))


@pytest.fixture
def stream(kafka_settings: Settings) -> Settings:
    """Own topics for this case (its first half must be alone in the events topic for a while)."""
    tag = uuid.uuid4().hex[:6]
    settings = kafka_settings.model_copy(
        update={
            "topic_prefix": f"{kafka_settings.topic_prefix}-rec{tag}",
            "sink_group": f"rec{tag}-sink",
            "snapshot_every_events": 300,
            "snapshot_every_seconds": 1.0,  # so a caught-up worker commits its last events soon
            "streams_session_timeout_seconds": 6.0,  # the killed worker leaves the group after this
        }
    )
    ensure_topics(settings)
    return settings


def app(settings: Settings, name: str) -> Settings:
    return settings.model_copy(update={"app_id": f"{settings.topic_prefix}-{name}", "worker_id": name})


def start(settings: Settings, log_dir: Path, name: str) -> tuple[ServiceGroup, Path]:
    group = start_services(settings, ("streams",), log_dir=log_dir / name)
    return group, log_dir / name / "streams.log"


def run_to_end(settings: Settings, log_dir: Path, name: str) -> str:
    """Start a worker, wait until it committed the whole events topic, stop it cleanly; its log."""
    group, log = start(settings, log_dir, name)
    end = sum(end_offsets(settings, settings.topics.events).values())
    try:
        wait_for(lambda: committed_total(settings) == end, f"{name} to commit all {end} events", 60, log)
    finally:
        codes = group.stop()
    assert codes == {"streams": 0}, log.read_text()[-3000:]
    return log.read_text()


def committed_total(settings: Settings) -> int:
    """Events covered by the app's commits; 0 while a fresh broker still elects the group coordinator."""
    try:
        done = committed_offsets(settings, settings.app_id, settings.topics.events)
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
            return 0
        raise
    return sum(max(o, 0) for o in done.values())


def wait_for(predicate, what: str, timeout: float = 30.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; " + (
            log.read_text()[-3000:] if log else ""
        )
        time.sleep(0.2)


def alerts_by_worker(settings: Settings) -> dict[str, list[dict]]:
    topic = settings.topics.alerts
    expected = sum(end_offsets(settings, topic).values())
    alerts = read_topic(settings, topic, decode=value_decoder(ALERT.decode), timeout=30)
    assert len(alerts) == expected, f"alerts topic not read to its end: {len(alerts)} of {expected}"
    got: dict[str, list[dict]] = {}
    for a in alerts:
        got.setdefault(a["worker_id"], []).append(a)
    return got


def without_run_fields(a: dict) -> dict:
    return {k: v for k, v in a.items() if k not in RUN_ONLY}


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_resumes_detectors_and_reproduces_the_uninterrupted_alerts(
    stream: Settings, tmp_path, stop_signal
):
    events = list(scenario().events())
    n_slices = len(scenario().slices)
    first, rest = events[: SPLIT * n_slices], events[SPLIT * n_slices :]
    restarted = app(stream, "restarted")

    # 1. the first part, a worker over it, then the stop
    assert produce_events(stream, first) == len(first)
    if stop_signal == signal.SIGTERM:
        run_to_end(restarted.model_copy(update={"worker_id": "first"}), tmp_path, "first")
        assert committed_total(restarted) == len(first), "a clean stop commits everything it processed"
    else:
        # checkpoints only every 300 events of a slice: the kill leaves work past the last one
        crashing = restarted.model_copy(update={"worker_id": "first", "snapshot_every_seconds": 600.0})
        group, log = start(crashing, tmp_path, "first")
        deadline = time.monotonic() + 60
        while committed_total(restarted) < len(first) // 2:
            assert time.monotonic() < deadline and group.alive()["streams"], log.read_text()[-3000:]
            time.sleep(0.1)
        group.procs["streams"].send_signal(signal.SIGKILL)
        assert group.procs["streams"].wait(10) == -signal.SIGKILL
        assert len(first) // 2 <= committed_total(restarted) <= len(first)

    # 2. the rest of the stream, the same app again
    assert produce_events(stream, rest) == len(rest)
    second_log = run_to_end(restarted.model_copy(update={"worker_id": "second"}), tmp_path, "second")

    # it restored every slice from its snapshot instead of warming up from zero
    restored = {s: int(n) for _, s, n in RESTORED.findall(second_log)}
    assert set(restored) == set(scenario().slices), second_log[-3000:]
    if stop_signal == signal.SIGTERM:
        assert restored == {s: SPLIT for s in scenario().slices}, (
            "a clean stop snapshots every slice where it stopped"
        )
    else:
        assert all(n >= 300 for n in restored.values()), restored

    assert_alerts_match_an_uninterrupted_run(stream, tmp_path, ("first", "second"))


def assert_alerts_match_an_uninterrupted_run(
    stream: Settings, tmp_path: Path, workers: tuple[str, ...]
) -> None:
    """Run a fresh app over the whole stream; ``workers``' alerts must be the same, each once."""
    run_to_end(app(stream, "reference"), tmp_path, "reference")
    alerts = alerts_by_worker(stream)
    ref = {a["alert_id"]: a for a in alerts.get("reference", [])}
    got = [a for w in workers for a in alerts.get(w, [])]
    assert ref, "the uninterrupted run detected nothing"
    assert ("eu-west", "amount", "DATA_DRIFT") in {
        (a["slice"], a["feature"], a["alert_type"]) for a in ref.values()
    }
    assert {a["slice"] for a in ref.values()} == {"eu-west"}, "false alarm on a stable slice"
    assert min(a["window_end_event_time"] for a in ref.values()) >= scenario().event_time("eu-west", DRIFT_AT)

    counts = Counter(a["alert_id"] for a in got)
    assert set(counts) == set(ref), "the interrupted app detected different changes (or at other offsets)"
    assert max(counts.values()) == 1, f"alert re-emitted: {counts.most_common(3)}"
    for a in got:
        assert without_run_fields(a) == without_run_fields(ref[a["alert_id"]])


def test_rebalance_hands_slices_over_with_their_state(stream: Settings, tmp_path):
    """A second worker joins mid-stream: the first checkpoints what it gives up, the second restores it."""
    events = list(scenario().events())
    n_slices = len(scenario().slices)
    first, rest = events[: SPLIT * n_slices], events[SPLIT * n_slices :]
    shared = app(stream, "shared")
    assert produce_events(stream, first) == len(first)
    group_a, log_a = start(shared.model_copy(update={"worker_id": "a"}), tmp_path, "a")
    group_b = None
    try:
        wait_for(lambda: committed_total(shared) == len(first), "worker a to finish the first part")
        group_b, log_b = start(shared.model_copy(update={"worker_id": "b"}), tmp_path, "b")
        wait_for(
            lambda: "assigned" in log_b.read_text() and log_a.read_text().count("assigned") == 2, "rebalance"
        )
        assert produce_events(stream, rest) == len(rest)
        wait_for(lambda: committed_total(shared) == len(events), "both workers to finish", timeout=60)
    finally:
        codes = {**group_a.stop(), **({"b": group_b.stop()["streams"]} if group_b else {})}
    assert set(codes.values()) == {0}, codes
    restored_b = {s: int(n) for _, s, n in RESTORED.findall(log_b.read_text())}
    assert restored_b and set(restored_b.values()) == {SPLIT}, (
        f"b did not take over the slices' state: {restored_b}"
    )
    assert_alerts_match_an_uninterrupted_run(stream, tmp_path, ("a", "b"))
