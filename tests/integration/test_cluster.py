"""`driftctl up --brokers 3`: three KRaft nodes, topics with 3 replicas and 2 in sync, and writes
with acks=all that survive one node killed with -9."""

from __future__ import annotations

import os
import signal

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from deploy.broker import free_port
from deploy.cluster import LocalCluster
from runtime.kafka import read_topic, retry_transient
from runtime.topics import ensure_topics
from schemas.settings import Settings, load_settings
from tests.conftest import SHARED_LIB_DIR


def _free_block(n: int) -> int:
    """A first port with the 2n ports from it free (brokers, then controllers)."""
    from deploy.kafka_host import port_free

    while True:
        first = free_port()
        if first + 2 * n < 65535 and all(port_free(first + i) for i in range(2 * n)):
            return first


def test_three_node_cluster_keeps_taking_writes_with_one_node_dead(tmp_path) -> None:
    settings: Settings = load_settings(
        kafka_bootstrap=f"127.0.0.1:{_free_block(3)}", run_dir=tmp_path, broker_heap="256m", topic_prefix="cl"
    )
    cluster = LocalCluster(settings, 3, lib_dir=SHARED_LIB_DIR)
    try:
        status = cluster.up()
        assert status["running"] and status["ready"] and status["brokers"] == 3
        settings = settings.model_copy(update={"kafka_bootstrap": cluster.bootstrap})
        ensure_topics(settings)
        admin = AdminClient(settings.confluent_config())
        events = settings.topics.events
        parts = admin.list_topics(events, timeout=10).topics[events].partitions
        assert all(len(p.replicas) == 3 for p in parts.values())
        resource = ConfigResource("topic", events)
        # a node that has not heard of the new topic yet answers UNKNOWN_TOPIC_OR_PART for a moment
        configs = retry_transient(lambda: admin.describe_configs([resource])[resource].result(), "describe configs",
                                  timeout=30)  # fmt: skip
        assert configs["min.insync.replicas"].value == "2"
        assert LocalCluster(settings).status()["nodes_running"] == 3  # down/status find it again

        victim = cluster.node(2)
        os.kill(victim._running_pid(), signal.SIGKILL)
        producer = Producer(settings.producer_config())
        failures = []
        for i in range(500):
            producer.produce(events, f"v{i}".encode(), f"k{i % 7}".encode(),
                             on_delivery=lambda err, _m: err and failures.append(err))  # fmt: skip
        assert producer.flush(60) == 0 and not failures  # acks=all with 2 of 3 in sync
        assert LocalCluster(settings).status()["nodes_running"] == 2
        victim.up()
        assert len(read_topic(settings, events, timeout=60)) == 500
    finally:
        stopped = cluster.down()
    assert stopped == 3
