"""More streams workers share the slices by consumer group, and a worker that joins or leaves
mid-stream moves detector state with its partitions, so nothing is lost or doubled.

Two workers (a, b), started by the launcher of ``driftctl run --workers streams=2``, share six
partitions while a paced producer writes a stream with four mean shifts (before, during and
after the third worker's stay). A third worker (c), started on its own as on another machine,
joins once a fifth of the stream is out and leaves cleanly (SIGTERM) at two thirds, both while
events flow. A single worker then reads the same stream under another app id. The group's
alerts must be the single worker's alerts, each once, with the same content; the group must
have committed every event; every slice's last snapshot must have counted each of its events
exactly once; and c must have started from the snapshots a and b wrote, and a and b from c's.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from deploy.scenarios import Drift, Scenario
from deploy.services import ServiceGroup, start_services
from runtime.kafka import end_offsets, read_topic, value_decoder
from runtime.kafka_groups import group_assignment
from runtime.topics import ensure_topics
from schemas.codec import ALERT, EVENT
from schemas.settings import Settings
from streams.app import decode_state, state_topic
from tests.integration.test_recovery import committed_total, without_run_fields

SLICES = tuple(f"region-{i}" for i in range(8))
PER_SLICE = 2400
JOIN_AT, LEAVE_AT = PER_SLICE // 5, 2 * PER_SLICE // 3  # slice index at which c starts / leaves
# Slices go to partition crc32(slice) % 6: region-1 -> 0, region-4/7 -> 1, region-0 -> 2,
# region-5/6 -> 3, region-2/3 -> 4 (5 is empty). The range assignor orders members by id
# (client.id = worker id first: a is w-1, b w-2, c w-3): a [0,1,2] b [3,4,5] with two, a [0,1]
# b [2,3] c [4,5] with three. So region-2 and region-3 go b -> c -> b, and region-0 a -> b -> a.
DRIFTS = (
    Drift("region-1", "amount", 500, size=2.0),  # before c joins; a's throughout
    Drift("region-3", "amount", 1000, size=2.0),  # while c owns it
    Drift("region-2", "latency_ms", 1450, size=2.0),  # begins while c owns it, near its leave
    Drift("region-0", "amount", 1900, size=2.0),  # after c left, on a slice that went a -> b -> a
)
RESTORED = re.compile(r"restored detector state for model=(\S+) slice=(\S+): (\d+) events")
CHUNK, TRICKLE, PAUSE = 160, 16, 0.2  # about 800 events/s; 80/s while held at a gate


def scenario() -> Scenario:
    return Scenario(slices=SLICES, events_per_slice=PER_SLICE, drifts=DRIFTS)


@pytest.fixture
def stream(kafka_settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:6]
    settings = kafka_settings.model_copy(
        update={
            "topic_prefix": f"{kafka_settings.topic_prefix}-scale{tag}",
            "events_partitions": 6,  # two each for three workers, three each for two
            "snapshot_every_events": 300,
            "snapshot_every_seconds": 1.0,
            "metrics_port": 0,  # three workers on one machine; metrics are not under test here
        }
    )
    ensure_topics(settings)
    return settings


def app(settings: Settings, name: str) -> Settings:
    return settings.model_copy(update={"app_id": f"{settings.topic_prefix}-{name}"})


def start(settings: Settings, log_dir: Path, worker: str) -> tuple[ServiceGroup, Path]:
    group = start_services(settings.model_copy(update={"worker_id": worker}), ("streams",), log_dir=log_dir / worker)
    return group, log_dir / worker / "streams.log"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float, logs: dict[str, Path]) -> None:
    began = time.monotonic()
    deadline = began + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w}\n{p.read_text()[-1500:]}" for w, p in logs.items() if p.exists())
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")
        time.sleep(0.2)
    print(f"{time.strftime('%H:%M:%S')} {what}: {time.monotonic() - began:.1f}s")  # in the output of a failure


def members(admin: AdminClient, group: str) -> dict[str, list[tuple[str, int]]]:
    """The stable group's members and their partitions ({} while it rebalances)."""
    try:
        return group_assignment(admin, group) or {}
    except KafkaException:
        return {}


class PacedProducer(threading.Thread):
    """Writes the stream in chunks with pauses; past a gate that the test has not opened yet it
    only trickles, so c's join and leave happen while events flow, however slowly c starts."""

    def __init__(self, settings: Settings, events: list[dict], gates: dict[int, threading.Event]):
        super().__init__(daemon=True)
        self.settings, self.events, self.gates = settings, events, gates
        self.sent, self.error = 0, None

    def run(self) -> None:
        producer = Producer(self.settings.producer_config())
        topic, began = self.settings.topics.events, time.monotonic()
        try:
            while self.sent < len(self.events):
                if time.monotonic() - began > 300:
                    raise TimeoutError(f"gates {self.gates} not opened in 300s")
                held = any(self.sent >= at and not gate.is_set() for at, gate in self.gates.items())
                for event in self.events[self.sent : self.sent + (TRICKLE if held else CHUNK)]:
                    producer.produce(topic, EVENT.encode(event), event["slice"].encode())
                if producer.flush(30):
                    raise TimeoutError("events not acknowledged in 30s")
                self.sent = min(len(self.events), self.sent + (TRICKLE if held else CHUNK))
                time.sleep(PAUSE)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_a_worker_joining_and_leaving_mid_stream_changes_no_alert_and_loses_no_event(stream: Settings, tmp_path):
    events = list(scenario().events())
    n = len(SLICES)
    shared = app(stream, "group")
    admin = AdminClient(stream.confluent_config())
    c_in, c_gone = threading.Event(), threading.Event()
    # past 45% of the stream the producer trickles until c holds partitions, past 80% until c left
    producer = PacedProducer(stream, events, {int(0.45 * len(events)): c_in, int(0.8 * len(events)): c_gone})
    logs: dict[str, Path] = {}
    groups: dict[str, ServiceGroup] = {}
    try:
        # a and b as `driftctl run --workers streams=2` starts them: worker ids w-1 and w-2
        groups["ab"] = start_services(shared.model_copy(update={"worker_id": "w"}), ("streams",),
                                      log_dir=tmp_path / "ab", workers={"streams": 2})  # fmt: skip
        logs["a"], logs["b"] = tmp_path / "ab" / "streams.log", tmp_path / "ab" / "streams-2.log"
        wait_for(lambda: len(members(admin, shared.app_id)) == 2, "a and b to form the group", 60, logs)
        producer.start()

        wait_for(lambda: producer.sent >= JOIN_AT * n, "a fifth of the stream", 60, logs)
        groups["c"], logs["c"] = start(shared, tmp_path, "w-3")  # sorts after w-1 and w-2
        wait_for(lambda: len(members(admin, shared.app_id)) == 3, "c to join", 60, logs)
        sent_at_join = producer.sent
        c_in.set()
        wait_for(lambda: RESTORED.search(logs["c"].read_text()) is not None, "c to restore a slice", 60, logs)

        wait_for(lambda: producer.sent >= LEAVE_AT * n, "two thirds of the stream", 60, logs)
        sent_at_leave = producer.sent
        groups["c"].procs["streams"].send_signal(signal.SIGTERM)
        assert groups["c"].procs["streams"].wait(30) == 0, logs["c"].read_text()[-3000:]
        c_gone.set()
        assert producer.sent < len(events), "c left after the stream ended: not mid-stream"

        producer.join(120)
        assert producer.error is None and producer.sent == len(events), producer.error
        wait_for(lambda: committed_total(shared) == len(events), "a and b to commit every event", 90, logs)
    finally:
        c_in.set()
        c_gone.set()
        codes = {f"{g}/{k}": code for g, group in groups.items() for k, code in group.stop().items()}
    assert set(codes.values()) == {0} and len(codes) == 3, codes
    assert 0 < sent_at_join < sent_at_leave < len(events), (sent_at_join, sent_at_leave)

    # no event lost or doubled: every slice's last snapshot counted each of its events once
    last = last_snapshots(shared)
    assert {s.slice: s.events for s in last.values()} == dict.fromkeys(SLICES, PER_SLICE)

    # state moved with the partitions: c started from a's and b's snapshots, and the slices c
    # had went back to a or b with what c had added
    c_restored = restored(logs["c"].read_text())
    assert c_restored and all(0 < k < PER_SLICE for k in c_restored.values()), c_restored
    left = shutdown_stamp(logs["c"])
    after_c = {**restored(log_after(logs["a"], left)), **restored(log_after(logs["b"], left))}
    moved_back = {s: k for s, k in after_c.items() if s in c_restored}
    assert moved_back and all(k > c_restored[s] for s, k in moved_back.items()), (
        f"c restored {c_restored}, a and b took back {moved_back}\n{handovers(logs)}"
    )

    # the same alerts as one worker on the same stream, each once
    single = app(stream, "single")
    g, logs["single"] = start(single, tmp_path, "single")
    try:
        wait_for(lambda: committed_total(single) == len(events), "the single worker", 90, logs)
    finally:
        assert g.stop() == {"streams": 0}
    alerts = read_topic(stream, stream.topics.alerts, decode=value_decoder(ALERT.decode), timeout=30)
    assert len(alerts) == sum(end_offsets(stream, stream.topics.alerts).values())
    ref = {a["alert_id"]: a for a in alerts if a["worker_id"] == "single"}
    got = [a for a in alerts if a["worker_id"] in ("w-1", "w-2", "w-3")]
    assert {(a["slice"], a["feature"]) for a in ref.values()} >= {(d.slice, d.feature) for d in DRIFTS}
    counts = Counter(a["alert_id"] for a in got)
    assert set(counts) == set(ref), "the group detected other changes than one worker did"
    assert max(counts.values()) == 1, f"an alert came twice: {counts.most_common(3)}"
    for a in got:
        assert without_run_fields(a) == without_run_fields(ref[a["alert_id"]])


def restored(log_text: str) -> dict[str, int]:
    """slice -> events in the snapshot it was restored from (the last restore of each)."""
    return {s: int(k) for _, s, k in RESTORED.findall(log_text)}


def log_after(log: Path, stamp: str) -> str:
    """The lines of a worker's log stamped after ``stamp`` (the logs share one clock and format)."""
    return "\n".join(line for line in log.read_text().splitlines() if line[:23] > stamp)


def shutdown_stamp(log: Path) -> str:
    return next(line[:23] for line in log.read_text().splitlines() if "clean shutdown" in line)


def handovers(logs: dict[str, Path]) -> str:
    """Who was assigned what and restored which slice, for a failure message."""
    return "\n".join(
        f"{w}: {line[11:23]} {line[line.index('streams.app') + 12 :][:120]}"
        for w, p in logs.items() if p.exists() for line in p.read_text().splitlines()
        if "assigned [" in line or "restored detector" in line
    )  # fmt: skip


def last_snapshots(settings: Settings) -> dict[bytes, object]:
    """The latest snapshot of each slice on the app's changelog."""
    latest = {}
    for msg in read_topic(settings, state_topic(settings), timeout=30):
        if msg.value() is not None:
            latest[msg.key()] = decode_state(msg.value())
    return latest
