"""Malformed messages of every fuzz kind mixed into good traffic, through the real streams worker
and sink: each one in the dead-letter topic and table with a reason, every good event
processed (none dead-lettered, every offset committed), no crash, and a snapshot read of the
same offsets returns exactly the good events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumers.query_server import open_reader
from deploy.fuzz import KINDS, good_event, malformed_messages
from deploy.services import start_services
from retrain_jobs.snapshot import read_snapshot
from runtime.kafka import committed_offsets, end_offsets, iter_topic
from runtime.topics import ensure_topics
from schemas.codec import DEAD_LETTER
from schemas.errors import DriftError
from schemas.settings import Settings
from tests.conftest import REPO

N_BAD = int(os.environ.get("DRIFT_TEST_FUZZ_MESSAGES", "1500"))  # the chaos bench sends 10,000+
N_GOOD = max(3000, 2 * N_BAD)


@pytest.fixture(scope="module")
def fuzzed(kafka_settings: Settings, tmp_path_factory):
    settings = kafka_settings.model_copy(update={  # own topics: its 1,500 dead letters stay out of other tests
        "topic_prefix": f"{kafka_settings.topic_prefix}.fuzz",
        "app_id": f"{kafka_settings.topic_prefix}-fuzz-streams",
        "sink_group": f"{kafka_settings.topic_prefix}-fuzz-sink",
        "metrics_port": 0,
    })  # fmt: skip
    ensure_topics(settings)
    start = end_offsets(settings, settings.topics.events)
    group = start_services(settings, ("streams", "sink"), log_dir=tmp_path_factory.mktemp("fuzz-logs"))
    producer = Producer(settings.producer_config(**{"message.max.bytes": 2_000_000}))
    bad: dict[tuple[int, int], str] = {}  # (partition, offset) -> kind
    good: set[tuple[int, int]] = set()
    failures: list[str] = []

    def delivered(kind):
        def cb(err, msg):
            if err is not None:
                failures.append(f"{kind}: {err}")
            elif kind == "good":
                good.add((msg.partition(), msg.offset()))
            else:
                bad[(msg.partition(), msg.offset())] = kind
        return cb

    fuzz = malformed_messages(N_BAD, seed=12)
    for i in range(N_GOOD):
        event = good_event(i, slice_=f"fz-{i % 3}")
        producer.produce(settings.topics.events, json.dumps(event).encode(), event["slice"].encode(),
                         on_delivery=delivered("good"))  # fmt: skip
        if i % 2 == 0 and i // 2 < N_BAD:
            kind, value = next(fuzz)
            producer.produce(settings.topics.events, value, f"fz-{i % 3}".encode(), on_delivery=delivered(kind))
        producer.poll(0)
    assert producer.flush(120) == 0 and not failures, failures[:5]
    yield settings, group, start, bad, good
    codes = group.stop()
    assert all(c == 0 for c in codes.values()), f"a service crashed: {codes}"


def test_every_malformed_message_is_dead_lettered_with_a_reason(fuzzed):
    settings, group, _start, bad, good = fuzzed
    assert len(bad) == N_BAD and set(Counter(bad.values())) == set(KINDS)
    letters = {}
    deadline = time.monotonic() + 240
    while len(letters) < len(bad) and time.monotonic() < deadline:
        for msg in iter_topic(settings, settings.topics.dlq, decode=lambda m: DEAD_LETTER.decode(m.value()),
                              until_end=True, timeout=60):  # fmt: skip
            letters[(msg["source_partition"], msg["source_offset"])] = msg
        time.sleep(1)
        assert all(group.alive().values()), f"a service died: {group.alive()}"
    mine = {k: v for k, v in letters.items() if k in bad or k in good}
    assert set(mine) == set(bad), f"missing {len(set(bad) - set(mine))}, good ones dead-lettered: {len(set(mine) & good)}"
    assert all(dl["reason"] and dl["error_type"] == "SchemaError" for dl in mine.values())
    rss = {name: rss_mb(p.pid) for name, p in group.procs.items()}
    print(f"fuzz: {len(bad)} malformed ({dict(Counter(bad.values()))}) among {len(good)} good; "
          f"dead-lettered {len(mine)}; RSS MB {rss}")
    assert all(mb < 1500 for mb in rss.values()), rss  # bounded: a few near-1 MB messages, not a leak


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_every_good_event_is_processed_and_committed(fuzzed):
    settings, group, _start, _bad, _good = fuzzed
    ends = {p: e for p, e in end_offsets(settings, settings.topics.events).items() if e > 0}
    deadline = time.monotonic() + 120
    while True:
        done = committed_offsets(settings, settings.app_id, settings.topics.events)
        if all(done.get(p, -1) >= e for p, e in ends.items()):
            break
        assert time.monotonic() < deadline, f"the streams worker did not commit past the fuzzed messages: {done} {ends}"
        assert all(group.alive().values()), f"a service died: {group.alive()}"
        time.sleep(1)


def test_the_dead_letters_table_has_them_with_their_reasons(fuzzed):
    settings, _group, _start, bad, _good = fuzzed
    deadline, rows = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        try:
            reader = open_reader(settings)
            try:
                _cols, rows = reader.query(
                    "SELECT count(), countIf(reason = '') FROM dead_letters FINAL WHERE error_type = 'SchemaError'"
                )
            finally:
                reader.close()
        except DriftError:
            rows = []
        if rows and rows[0][0] >= len(bad):
            break
        time.sleep(2)
    assert rows and rows[0][0] >= len(bad) and rows[0][1] == 0, rows


def test_a_snapshot_of_the_same_offsets_returns_exactly_the_good_events(fuzzed):
    settings, _group, start, _bad, good = fuzzed
    ends = end_offsets(settings, settings.topics.events)
    snapshot = {"topic": settings.topics.events, "labelled_only": False,
                "ranges": [{"partition": p, "start_offset": start.get(p, 0), "end_offset": e} for p, e in ends.items()]}
    events = read_snapshot(settings, snapshot)
    assert len([e for e in events if e["model"] == "fuzz-model"]) == len(good)


def test_file_and_url_probes_are_refused_while_the_services_run(fuzzed, tmp_path):
    """`driftctl query` as a user runs it, against the live sink's query socket."""
    settings, _group, _start, _bad, _good = fuzzed
    out = tmp_path / "written-by-the-sink.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    env.update(DRIFT_RUN_DIR=str(settings.run_dir), PYTHONPATH=str(REPO))
    for sql in (f"SELECT * FROM dead_letters INTO OUTFILE '{out}' TRUNCATE",
                "SELECT * FROM file('/etc/passwd', 'LineAsString')",
                "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
                "INSERT INTO dead_letters (reason) VALUES ('x')"):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "deploy.cli", "query", sql], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert proc.returncode == 2 and ("not allowed" in proc.stderr or "read-only" in proc.stderr), proc.stderr
    assert not out.exists()
    ok = subprocess.run([sys.executable, "-m", "deploy.cli", "query", "SELECT getSetting('readonly') AS r"], env=env,
                        capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert ok.returncode == 0 and "1" in ok.stdout.splitlines()[-1], ok.stderr
