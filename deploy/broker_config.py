"""What a local KRaft broker is configured with: its node of a cluster, the checks that it can
run here, and its ``server.properties`` (pure: no JVM, no files; deploy/broker.py writes them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigError, InfraError
from schemas.settings import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@dataclass(frozen=True)
class Node:
    """One node of a local cluster (deploy/cluster.py); the defaults are the single broker."""

    node_id: int = 1
    port: int | None = None  # None: the bootstrap's port
    controller_port: int | None = None  # None: port + 1, or a free port
    voters: str | None = None  # controller.quorum.voters; None: this node alone
    home: Path | None = None  # None: <run_dir>/kafka
    cluster_id_file: Path | None = None  # shared by the nodes of one cluster
    replication: int = 1  # default.replication.factor of the cluster (min.insync.replicas: one less)


def check_local(settings: Settings, node: Node, host: str) -> None:
    """Raise unless ``settings`` describe a broker this machine can run (127.0.0.1, PLAINTEXT, a JVM heap)."""
    several = "," in settings.kafka_bootstrap and node.voters is None  # a cluster checks its own list
    if several or host not in LOCAL_HOSTS:
        raise InfraError(
            f"the local broker listens on 127.0.0.1 only; DRIFT_KAFKA_BOOTSTRAP="
            f"{settings.kafka_bootstrap!r} names another host. Use 127.0.0.1:<port>, or don't "
            "start a local broker when pointing at a remote cluster."
        )
    if settings.kafka_security_protocol != "PLAINTEXT":
        raise InfraError(
            "the local broker serves PLAINTEXT only; unset DRIFT_KAFKA_SECURITY_PROTOCOL "
            f"(now {settings.kafka_security_protocol}) to use it"
        )
    if not re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", settings.broker_heap):
        raise ConfigError(f"DRIFT_BROKER_HEAP: expected a JVM size such as 512m or 2g (got {settings.broker_heap!r})")


def server_properties(
    settings: Settings,
    node: Node,
    port: int,
    controller_port: int,
    data_dir: Path,
    *,
    extra_listener: tuple[str, int] | None = None,
    extra_properties: dict[str, str] | None = None,
) -> dict[str, str]:
    """The broker's ``server.properties`` as a dict, in the order they are written.

    ``extra_listener`` (e.g. ("SASL_SSL", port)) and ``extra_properties`` come beside the
    PLAINTEXT listener that ``up()`` waits on.
    """
    s, n = settings, node
    rf, min_isr = str(n.replication), str(max(1, n.replication - 1))
    props = {
        # KRaft: each process is broker and controller; a static quorum of one (or of the cluster's nodes).
        "process.roles": "broker,controller",
        "node.id": str(n.node_id),
        "controller.quorum.voters": n.voters or f"{n.node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # Topics are created explicitly (runtime/topics.py, faust declares its own):
        # auto-creation would silently make a wrongly sized topic from a typo or from a
        # consumer that subscribes before `driftctl up`, and production clusters disable it.
        "auto.create.topics.enable": "false",
        "num.partitions": "3",
        # a topic created without a replication factor (DRIFT_REPLICATION_FACTOR unset) gets these
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        # 50 partitions (the default) make the first consumer group on a fresh broker slow.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "10",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.ms": str(s.retention_ms),
        "log.retention.check.interval.ms": "300000",
        "delete.topic.enable": "true",
    }
    if extra_listener is not None:
        name, extra_port = extra_listener
        props["listeners"] += f",{name}://127.0.0.1:{extra_port}"
        props["advertised.listeners"] += f",{name}://127.0.0.1:{extra_port}"
        props["listener.security.protocol.map"] += f",{name}:{name}"
    props.update(extra_properties or {})
    return props
