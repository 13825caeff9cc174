"""Create (and, for tests, delete) the pipeline topics (schemas/topics.py) with the confluent-kafka AdminClient."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.kafka import is_transient, retry_transient
from schemas.errors import InfraError
from schemas.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int | None  # None: the cluster's default.replication.factor
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The pipeline topics, sized from settings (events/alerts partitions, the rest other_partitions)."""
    t = settings.topics
    partitions = {t.events: settings.events_partitions, t.alerts: settings.alerts_partitions}
    config = {"retention.ms": str(settings.retention_ms)}
    compacted = {t.models: {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}}
    return [
        TopicSpec(
            name,
            partitions.get(name, settings.other_partitions),
            settings.replication_factor,
            compacted.get(name, dict(config)),
        )
        for name in t.all()
    ]


def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create the missing pipeline topics; returns the names created (existing ones are fine)."""
    return create_topics(settings, topic_specs(settings), timeout=timeout)


def create_topics(settings: Settings, specs: list[TopicSpec], *, timeout: float = 30.0) -> list[str]:
    """Create ``specs`` idempotently and wait until every partition has a leader."""
    admin = _admin(settings)
    new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor or -1,
                    config=s.config) for s in specs]  # fmt: skip
    try:
        futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    except KafkaException as exc:
        raise InfraError(f"cannot create topics on {settings.kafka_bootstrap}: {exc}") from exc
    created: list[str] = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout + 5)
            created.append(name)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise InfraError(
                    f"cannot create topic {name!r} on {settings.kafka_bootstrap}: {err.str()}"
                ) from exc
    md = _wait_for_leaders(admin, specs, settings, timeout)
    for s in specs:
        have = len(md.topics[s.name].partitions)
        if s.name not in created and have != s.partitions:
            log.warning(
                "topic %s exists with %d partitions, settings ask for %d; left as is",
                s.name,
                have,
                s.partitions,
            )
    if created:
        log.info("created topics: %s", ", ".join(sorted(created)))
    return sorted(created)


def delete_topics(settings: Settings, names: list[str] | None = None, *, timeout: float = 30.0) -> list[str]:
    """Delete ``names`` (default: the six topics of ``settings``); missing ones are ignored."""
    admin = _admin(settings)
    names = list(names) if names is not None else settings.topics.all()
    if not names:
        return []
    deleted: list[str] = []
    for name, fut in admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            fut.result(timeout=timeout + 5)
            deleted.append(name)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise InfraError(f"cannot delete topic {name!r}: {err.str()}") from exc
    return sorted(deleted)


def app_topics(settings: Settings) -> list[str]:
    """The streams app's own topics (its detector-state changelog), named after ``app_id``."""
    names = _admin(settings).list_topics(timeout=10).topics
    return [n for n in names if n.startswith(settings.app_id + "-")]


def partition_counts(settings: Settings, *, timeout: float = 10.0) -> dict[str, int]:
    """Partitions per existing (non-internal) topic."""
    admin = _admin(settings)
    md = retry_transient(lambda: admin.list_topics(timeout=timeout), "listing topics", timeout=60.0)
    return {
        name: len(t.partitions) for name, t in md.topics.items() if not name.startswith("__") and not t.error
    }


def _wait_for_leaders(admin: AdminClient, specs: list[TopicSpec], settings: Settings, timeout: float) -> Any:
    """CreateTopics returns before every broker's metadata cache has the topic; wait for it,
    so an immediate produce does not hit UNKNOWN_TOPIC_OR_PART."""
    deadline = time.monotonic() + timeout
    pending = {s.name for s in specs}
    while True:
        try:
            md = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
            continue
        for name in list(pending):
            t = md.topics.get(name)
            if (
                t is not None
                and not t.error
                and t.partitions
                and all(p.leader >= 0 for p in t.partitions.values())
            ):
                pending.discard(name)
        if not pending:
            return md
        if time.monotonic() >= deadline:
            raise InfraError(f"topics {sorted(pending)} have no partition leaders on {settings.kafka_bootstrap} "
                             f"after {timeout:.0f}s")  # fmt: skip
        time.sleep(0.1)


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.confluent_config())
