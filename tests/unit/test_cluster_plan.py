"""The local cluster's layout (ports, quorum, replication) and the chaos schedule, without a JVM."""

from __future__ import annotations

import pytest

from deploy.chaos_faults import TARGETS, schedule
from deploy.cluster import LocalCluster, bootstrap_ports
from schemas.errors import ConfigError, InfraError
from schemas.settings import load_settings


def test_ports_come_from_the_bootstrap_list_or_follow_its_first_port() -> None:
    three = load_settings(kafka_bootstrap="127.0.0.1:19510,127.0.0.1:19520,localhost:19530")
    assert bootstrap_ports(three, 3) == [19510, 19520, 19530]
    assert bootstrap_ports(load_settings(kafka_bootstrap="127.0.0.1:19510"), 3) == [19510, 19511, 19512]
    with pytest.raises(ConfigError, match="lists 2 addresses for --brokers 3"):
        bootstrap_ports(load_settings(kafka_bootstrap="127.0.0.1:1,127.0.0.1:2"), 3)
    with pytest.raises(InfraError, match="127.0.0.1 only"):
        bootstrap_ports(load_settings(kafka_bootstrap="kafka.example:9092"), 3)


def test_nodes_form_one_quorum_with_three_replicas_and_two_in_sync(tmp_path) -> None:
    settings = load_settings(kafka_bootstrap="127.0.0.1:19510", run_dir=tmp_path)
    cluster = LocalCluster(settings, 3)
    assert cluster.bootstrap == "127.0.0.1:19510,127.0.0.1:19511,127.0.0.1:19512"
    for node in cluster.nodes:
        node.home.mkdir(parents=True)
        node._write_properties(node._controller_port())
        props = dict(line.split("=", 1) for line in node.properties.read_text().splitlines() if "=" in line)
        assert props["node.id"] == str(node.node.node_id)
        assert props["controller.quorum.voters"] == "1@127.0.0.1:19513,2@127.0.0.1:19514,3@127.0.0.1:19515"
        assert props["listeners"] == f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.port + 3}"
        assert props["default.replication.factor"] == "3" and props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["log.dirs"].startswith(str(tmp_path / "kafka-cluster" / f"node-{node.node.node_id}"))
    assert len({n.cluster_id_file for n in cluster.nodes}) == 1  # one cluster id for all
    assert cluster.status()["running"] is False
    assert LocalCluster(settings).nodes == []  # nothing recorded before `up`


def test_single_broker_keeps_one_replica(tmp_path) -> None:
    from deploy.broker import LocalBroker

    broker = LocalBroker(load_settings(kafka_bootstrap="127.0.0.1:19510", run_dir=tmp_path))
    broker.home.mkdir(parents=True)
    broker._write_properties(19599)
    text = broker.properties.read_text()
    assert "default.replication.factor=1\n" in text and "min.insync.replicas=1\n" in text
    assert "controller.quorum.voters=1@127.0.0.1:19599\n" in text


def test_chaos_schedule_is_seeded_and_hits_every_target_once() -> None:
    a, b = schedule(7, 3), schedule(7, 3)
    assert a == b
    assert sorted(f.target for f in a) == sorted(TARGETS)
    broker = next(f for f in a if f.target == "broker")
    assert 1 <= broker.node <= 3 and broker.down > 0
    assert all(f.node == 0 for f in a if f.target != "broker")
    assert schedule(8, 3) != a
