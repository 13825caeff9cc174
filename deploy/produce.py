"""Events to ``drift.events`` as Avro, waiting until the broker acknowledged every one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from runtime.progress import progress as progress_bar
from schemas.codec import EVENT
from schemas.errors import DriftError, SchemaError
from schemas.events import normalize_event
from schemas.settings import Settings


class ProduceError(DriftError):
    """Some events were not delivered, or the input had bad lines."""


def validate_file(path: Path, max_errors: int = 10) -> int:
    """Check every line before producing anything, so a bad file sends nothing."""
    errors, count = [], 0
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                normalize_event(json.loads(line))
            except (ValueError, SchemaError) as exc:
                errors.append(f"{path}:{lineno}: {exc}")
                if len(errors) >= max_errors:
                    break
            count += 1
    if errors:
        raise ProduceError("bad event line(s), nothing was produced:\n" + "\n".join(errors))
    return count


def read_events(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield normalize_event(json.loads(line))


def produce_events(
    settings: Settings,
    events: Iterable[dict[str, Any]],
    progress: Callable[[int], None] | None = None,
    flush_timeout: float = 120.0,
) -> int:
    """Produce events keyed by slice; returns how many were delivered, raises if any was not."""
    producer = Producer(settings.producer_config(**{"linger.ms": 20, "batch.num.messages": 10000}))
    failures: list[str] = []
    delivered = 0
    topic = settings.topics.events

    def on_delivery(err, msg) -> None:
        nonlocal delivered
        if err is not None:
            failures.append(f"{msg.key()!r}: {err}")
        else:
            delivered += 1

    sent = 0
    for event in events:
        value = EVENT.encode(event)
        while True:
            try:
                producer.produce(topic, key=event["slice"].encode(), value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
            except KafkaException as exc:
                raise ProduceError(f"cannot produce to {topic}: {exc}") from exc
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
            if progress:
                progress(sent)
    remaining = producer.flush(flush_timeout)
    if progress:
        progress(sent)
    if remaining or failures:
        raise ProduceError(
            f"{sent - delivered} of {sent} events not delivered to {topic} "
            f"({remaining} still queued after {flush_timeout:.0f}s); first errors: {failures[:3]}"
        )
    return delivered


def produce_file(settings: Settings, path: Path, progress: Callable[[int], None] | None = None) -> int:
    """Validate, then produce every line; a progress bar on a terminal unless ``progress`` is given."""
    if not path.exists():
        raise ProduceError(f"no such file: {path}")
    total = validate_file(path)
    if progress is not None:
        return produce_events(settings, read_events(path), progress)
    with progress_bar(settings, total=total, desc=f"produce {path.name}", unit="ev") as bar:
        return produce_events(settings, read_events(path), bar.to)
