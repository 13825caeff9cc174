"""Shared fixtures.

Integration tests get a real Kafka broker: the one named by ``DRIFT_KAFKA_BOOTSTRAP`` if set
(security settings from the environment too), else a local KRaft broker started once per
session on a free port with its data in the session's tmp dir (jars shared in ``.run/kafka/lib``).
Each session uses its own topic prefix, so sessions never see each other's records. Nothing
here skips: if the broker cannot come up, the tests error with the broker's log tail.
"""

from __future__ import annotations

import gc
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
SHARED_LIB_DIR = REPO / ".run" / "kafka" / "lib"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is `integration`; run unit tests first (stable order)."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)


@dataclass
class KafkaSession:
    settings: Settings
    broker: object | None  # deploy.broker.LocalBroker when we started one, None for an external broker


@pytest.fixture(scope="session")
def kafka_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSession]:
    from deploy.broker import LocalBroker, free_port
    from runtime.topics import delete_topics, ensure_topics
    from schemas.event_columns import warm_up

    warm_up()  # the streams workers started by the tests load the compiled decoder from numba's cache
    prefix = f"t{uuid.uuid4().hex[:10]}"
    run_dir = tmp_path_factory.mktemp("run")
    broker = None
    if os.environ.get("DRIFT_KAFKA_BOOTSTRAP"):
        settings = load_settings(run_dir=run_dir, topic_prefix=prefix)
    else:
        settings = load_settings(
            kafka_bootstrap=f"127.0.0.1:{free_port()}", run_dir=run_dir, topic_prefix=prefix
        )
        broker = LocalBroker(settings, lib_dir=SHARED_LIB_DIR)
        broker.up()
    try:
        ensure_topics(settings)
        yield KafkaSession(settings, broker)
    finally:
        gc.collect()  # drop unreferenced clients first, or librdkafka logs reconnect failures
        if broker is not None:
            broker.down()
        else:  # leave a shared broker as we found it
            from confluent_kafka.admin import AdminClient

            names = AdminClient(settings.confluent_config()).list_topics(timeout=10).topics
            delete_topics(settings, [n for n in names if n.startswith((prefix + ".", prefix + "-"))])


@pytest.fixture(scope="session")
def kafka_settings(kafka_session: KafkaSession) -> Settings:
    """Settings pointing at the session's broker, with this session's unique topic prefix."""
    return kafka_session.settings


@pytest.fixture(scope="session")
def local_broker(kafka_session: KafkaSession) -> object | None:
    """The session's LocalBroker, or None when DRIFT_KAFKA_BOOTSTRAP named an external one."""
    return kafka_session.broker


@pytest.fixture
def fresh_group(request: pytest.FixtureRequest) -> str:
    """A consumer group id no other test (or session) uses."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]
    return f"test-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def scratch_topic(kafka_settings: Settings) -> Iterator[Callable[..., str]]:
    """Factory for throw-away topics (so tests don't put foreign records on the pipeline topics)."""
    from runtime.topics import TopicSpec, create_topics, delete_topics

    made: list[str] = []

    def make(partitions: int = 3) -> str:
        name = f"{kafka_settings.topic_prefix}.scratch.{uuid.uuid4().hex[:8]}"
        create_topics(kafka_settings, [TopicSpec(name, partitions, kafka_settings.replication_factor)])
        made.append(name)
        return name

    yield make
    if made:
        delete_topics(kafka_settings, made)
