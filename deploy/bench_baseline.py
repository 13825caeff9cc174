"""The plain loop: the most a Python consumer doing one river ADWIN per value gets through here.

One confluent-kafka consumer, fastavro decoding of each event's Avro body, one
``river.drift.ADWIN`` (the streams worker's parameters) per (slice, feature) updated with each
value, and nothing else: no validation, no dead letters, no other detectors, no outputs, no
checkpoints. ``driftctl bench throughput --baseline`` runs it on the same events and broker as
the streams worker, in the same run, so the worker's rate has a ceiling to be read against.

It runs in a process of its own (``python -m deploy.bench_baseline``, settings from the
environment like every service), so it gets a whole interpreter as the worker does, and
prints one JSON object. The clock runs from the end of its first batch to its last event, like
the worker's from its first commit: start-up and group join are left out of both.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from typing import Any

from confluent_kafka import Consumer
from fastavro import schemaless_reader
from river import drift

from schemas.codec import EVENT, HEADER_LEN
from schemas.settings import Settings

ADWIN_CLOCK, ADWIN_GRACE = 32, 10  # streams/detectors.py AdwinDetector's defaults


def plain_loop(settings: Settings, topic: str, total: int, group: str, timeout: float = 300.0) -> dict[str, Any]:
    """Consume ``total`` events of ``topic`` from the beginning as consumer group ``group``."""
    consumer = Consumer(
        settings.confluent_config(
            **{"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([topic])
    try:
        return drain(
            consumer, total, settings.adwin_delta, settings.stream_batch_size, settings.stream_batch_seconds, timeout
        )
    finally:
        consumer.close()


def drain(
    consumer: Any, total: int, delta: float, batch_size: int = 5000, wait: float = 0.2, timeout: float = 300.0
) -> dict[str, Any]:
    """The loop itself, over a subscribed consumer: decode, one ADWIN update per value, count."""
    schema = EVENT.schema
    detectors: dict[tuple[str, str], drift.ADWIN] = {}
    seen = changes = 0
    start = time.monotonic()
    first: tuple[float, int] | None = None  # (time, events) at the end of the first batch
    while seen < total:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"the plain loop read {seen} of {total} events in {timeout:.0f}s")
        for msg in consumer.consume(batch_size, wait):
            if msg.error() is not None:
                continue
            event = schemaless_reader(io.BytesIO(msg.value()[HEADER_LEN:]), schema, None)
            slice_ = event["slice"]
            for feature, value in event["features"].items():
                if value is None:
                    continue
                detector = detectors.get((slice_, feature))
                if detector is None:
                    detector = detectors[(slice_, feature)] = drift.ADWIN(
                        delta=delta, clock=ADWIN_CLOCK, grace_period=ADWIN_GRACE
                    )
                detector.update(value)
                changes += detector.drift_detected
            seen += 1
        if first is None and seen:
            first = (time.monotonic(), seen)
    end = time.monotonic()
    t0, n0 = first if first is not None else (start, 0)
    span, counted = end - t0, seen - n0
    if counted <= 0 or span <= 0:  # everything came in one batch: start to end instead
        span, counted = end - start, seen
    return {
        "events_per_second": counted / span if span > 0 else None,
        "events": seen,
        "measured_events": counted,
        "measured_seconds": span,
        "startup_seconds": t0 - start,
        "detectors": len(detectors),
        "changes": changes,
    }


def run_plain_loop(settings: Settings, topic: str, total: int, group: str, timeout: float = 300.0) -> dict[str, Any]:
    """:func:`plain_loop` in a child process (a whole interpreter, like a worker), its JSON result."""
    from deploy.services import settings_env

    argv = [sys.executable, "-m", "deploy.bench_baseline", topic, str(total), group, str(timeout)]
    done = subprocess.run(argv, check=False, env=settings_env(settings), capture_output=True, text=True, timeout=timeout + 60)
    if done.returncode != 0:
        raise RuntimeError(f"the plain loop failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """``python -m deploy.bench_baseline TOPIC TOTAL GROUP [TIMEOUT]``: one JSON line on stdout."""
    from schemas.settings import load_settings

    topic, total, group = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 300.0
    print(json.dumps(plain_loop(load_settings(), topic, total, group, timeout)))


if __name__ == "__main__":
    main()
