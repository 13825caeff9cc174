"""A local three-node (or N-node) KRaft cluster: ``driftctl up --brokers 3``.

Each node is a :class:`~deploy.broker.LocalBroker` (one JVM, combined broker and controller)
with its own ports and data; the nodes form one static controller quorum and share one
cluster id. Topics created without a replication factor get ``N`` replicas (at most 3) and
``min.insync.replicas`` one less, so with ``acks=all`` a write survives one node's loss and
the cluster keeps taking writes while one node is down. Everything lives under
``<run_dir>/kafka-cluster``::

    cluster.id        the KRaft cluster id of every node
    cluster.json      the nodes' ports, written by `up`, read by `down` and `status`
    node-<id>/        one LocalBroker home each (data/, server.properties, broker.pid, broker.log)

Ports: the local addresses of ``DRIFT_KAFKA_BOOTSTRAP`` if it lists N of them, otherwise
consecutive ports from its first port; controllers on the N ports after the brokers'.
Clients should list every node in ``DRIFT_KAFKA_BOOTSTRAP`` so that a process started while
the first node is down still finds the cluster (``up`` prints the value).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from deploy.broker import LocalBroker
from deploy.broker_config import LOCAL_HOSTS, Node
from deploy.kafka_host import port_free
from schemas.errors import ConfigError, InfraError
from schemas.settings import Settings

log = logging.getLogger(__name__)
MAX_REPLICATION = 3


def cluster_home(settings: Settings) -> Path:
    return Path(settings.run_dir).resolve() / "kafka-cluster"


def bootstrap_ports(settings: Settings, brokers: int) -> list[int]:
    """The brokers' ports: the bootstrap's own list when it has ``brokers`` addresses, else
    consecutive ports from its first one."""
    addresses = [a.strip() for a in settings.kafka_bootstrap.split(",") if a.strip()]
    hosts = {a.rpartition(":")[0] for a in addresses}
    if not hosts <= LOCAL_HOSTS:
        raise InfraError(
            f"a local cluster listens on 127.0.0.1 only; DRIFT_KAFKA_BOOTSTRAP={settings.kafka_bootstrap!r} "
            "names another host"
        )
    ports = [int(a.rpartition(":")[2]) for a in addresses]
    if len(ports) == brokers:
        return ports
    if len(ports) != 1:
        raise ConfigError(
            f"DRIFT_KAFKA_BOOTSTRAP lists {len(ports)} addresses for --brokers {brokers}: list {brokers} "
            "(one per node) or one (the nodes take consecutive ports from it)"
        )
    if ports[0] + 2 * brokers > 65535:
        raise ConfigError(f"DRIFT_KAFKA_BOOTSTRAP: port {ports[0]} leaves no room for {brokers} brokers")
    return [ports[0] + i for i in range(brokers)]


class LocalCluster:
    """Start, stop and inspect ``brokers`` local nodes as one cluster (``brokers=None``: the
    cluster last brought up in this run dir, for ``down`` and ``status``)."""

    def __init__(self, settings: Settings, brokers: int | None = None, *, lib_dir: Path | str | None = None,
                 start_timeout: float = 90.0) -> None:  # fmt: skip
        self.settings = settings
        self.home = cluster_home(settings)
        self.state_file = self.home / "cluster.json"
        self.lib_dir = lib_dir
        self.start_timeout = start_timeout
        if brokers is None:
            ports = self._recorded_ports()
        else:
            if brokers < 1:
                raise ConfigError(f"--brokers: expected 1 or more, got {brokers}")
            ports = bootstrap_ports(settings, brokers)
        self.ports = ports
        n = len(ports)
        controllers = [p + n for p in ports] if ports and max(ports) + n <= 65535 else []
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, c in enumerate(controllers))
        replication = min(MAX_REPLICATION, n)
        self.nodes = [
            LocalBroker(
                settings,
                lib_dir=lib_dir,
                start_timeout=start_timeout,
                node=Node(
                    i + 1, port, controllers[i], voters, self.home / f"node-{i + 1}", self.home / "cluster.id", replication
                ),
            )
            for i, port in enumerate(ports)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _recorded_ports(self) -> list[int]:
        try:
            return [int(p) for p in json.loads(self.state_file.read_text())["ports"]]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return []

    def up(self) -> dict[str, Any]:
        """Start every node that is not running, then wait until each answers and the
        cluster's metadata lists all of them."""
        if not self.nodes:
            raise ConfigError("no cluster to start: give --brokers N")
        recorded = self._recorded_ports()
        if recorded and recorded != self.ports and any(n._running_pid() for n in LocalCluster(self.settings).nodes):
            raise InfraError(f"a local cluster on ports {recorded} is running in {self.home}; driftctl down first")
        for node in self.nodes:
            node._check_local()
            for port in (node.port, node.node.controller_port):
                if node._running_pid() is None and not port_free(port):
                    raise InfraError(f"port {port} on 127.0.0.1 is taken; choose other ports with "
                                     "DRIFT_KAFKA_BOOTSTRAP=127.0.0.1:<p1>,127.0.0.1:<p2>,...")  # fmt: skip
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"ports": self.ports, "bootstrap": self.bootstrap}) + "\n")
        launched = {}
        try:
            for node in self.nodes:
                if node._running_pid() is None:
                    launched[node.node.node_id] = node.launch()
            for node in self.nodes:
                got = launched.get(node.node.node_id)
                if got is not None:
                    node._wait_ready(got[0], log_offset=got[1])
            self._wait_all_brokers()
        except BaseException:
            for node in self.nodes:
                if node.node.node_id in launched:
                    node.down()
            raise
        return self.status()

    def _wait_all_brokers(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.settings.confluent_config(**{"bootstrap.servers": self.bootstrap}))
        deadline = time.monotonic() + self.start_timeout
        seen: set[int] = set()
        while time.monotonic() < deadline:
            try:
                seen = set(admin.list_topics(timeout=2).brokers)
            except Exception:  # noqa: BLE001 - retried until the deadline
                seen = set()
            if len(seen) >= len(self.nodes):
                return
            time.sleep(0.3)
        raise InfraError(f"the cluster at {self.bootstrap} lists brokers {sorted(seen)} of {len(self.nodes)} "
                         f"after {self.start_timeout:.0f}s; logs in {self.home}/node-*/broker.log")  # fmt: skip

    def down(self) -> int:
        """Stop every node (SIGTERM, then SIGKILL); how many were running. The data stays; the
        record of the ports goes (``status`` then shows the single broker)."""
        stopped = sum(node.down() for node in self.nodes)
        self.state_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, Any]:
        nodes = [node.status() for node in self.nodes]
        running = [n for n in nodes if n["running"]]
        return {
            "brokers": len(nodes),
            "running": bool(nodes) and len(running) == len(nodes),
            "nodes_running": len(running),
            "ready": bool(nodes) and all(n["ready"] for n in nodes),
            "bootstrap": self.bootstrap,
            "replication_factor": min(MAX_REPLICATION, len(nodes)),
            "min_insync_replicas": max(1, min(MAX_REPLICATION, len(nodes)) - 1),
            "topics": next((n["topics"] for n in nodes if n["topics"]), []),
            "nodes": [{k: n[k] for k in ("pid", "running", "ready", "bootstrap", "log")} for n in nodes],
        }

    def node(self, node_id: int) -> LocalBroker:
        return self.nodes[node_id - 1]
