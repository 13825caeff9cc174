"""Faults for ``driftctl bench chaos``: a seeded schedule, ``kill -9`` and restart, and the
probes that say when the killed part is back.

A fault is back when it does its job again, not merely when a process exists:

- a broker: its JVM answers again and every partition of the run's topics has all its
  replicas in sync (nothing under-replicated);
- a service: the supervisor restarted it (deploy/services.py) and its consumer group is
  stable with a *new* member of the service's client id holding partitions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient

from deploy.cluster import LocalCluster
from deploy.services import ServiceGroup
from schemas.settings import Settings

log = logging.getLogger(__name__)

TARGETS = ("broker", "streams", "sink", "router", "retrain")


@dataclass(frozen=True)
class Fault:
    target: str  # one of TARGETS
    wait: float  # seconds after the previous fault recovered (or the load started)
    node: int = 0  # the broker killed (1..N), for target "broker"
    down: float = 0.0  # seconds a killed broker stays down before its restart


def schedule(seed: int, brokers: int, *, first: float = 15.0, gap: tuple[float, float] = (5.0, 15.0),
             down: tuple[float, float] = (3.0, 10.0)) -> list[Fault]:  # fmt: skip
    """Each target once, in a seeded order, with seeded waits (pure: the same seed, the same plan)."""
    rng = random.Random(seed)
    order = rng.sample(TARGETS, len(TARGETS))
    plan = []
    for i, target in enumerate(order):
        wait = first if i == 0 else rng.uniform(*gap)
        node = rng.randint(1, brokers) if target == "broker" else 0
        plan.append(Fault(target, round(wait, 1), node, round(rng.uniform(*down), 1) if node else 0.0))
    return plan


@dataclass
class Outcome:
    fault: Fault
    killed_pid: int
    killed_at: float  # seconds since the load started
    recovered_seconds: float | None  # None: not back within the timeout
    detail: str = ""


@dataclass
class Injector:
    """Kills and restarts one fault at a time; measures its recovery."""

    settings: Settings
    cluster: LocalCluster
    services: ServiceGroup
    groups: dict[str, tuple[str, str]]  # service -> (consumer group, client id of its process)
    topics: list[str]
    timeout: float = 120.0
    clock: Callable[[], float] = time.monotonic
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.admin = AdminClient(self.settings.confluent_config(**{"bootstrap.servers": self.cluster.bootstrap}))

    def inject(self, fault: Fault, t0: float) -> Outcome:
        if fault.target == "broker":
            outcome = self._broker(fault, t0)
        else:
            outcome = self._service(fault, t0)
        self.outcomes.append(outcome)
        log.warning("fault %s: killed pid %d at %.1fs, back after %s s %s", fault.target, outcome.killed_pid,
                    outcome.killed_at, outcome.recovered_seconds, outcome.detail)  # fmt: skip
        return outcome

    def _broker(self, fault: Fault, t0: float) -> Outcome:
        node = self.cluster.node(fault.node)
        pid = node._running_pid()
        if pid is None:
            return Outcome(fault, -1, self.clock() - t0, None, f"broker {fault.node} was not running")
        killed = self.clock()
        os.kill(pid, signal.SIGKILL)
        time.sleep(fault.down)
        node.up()  # waits until it answers
        ok = self._wait(lambda: self._fully_replicated())
        return Outcome(fault, pid, killed - t0, round(self.clock() - killed, 1) if ok else None, f"node {fault.node}")

    def _service(self, fault: Fault, t0: float) -> Outcome:
        group, client = self.groups[fault.target]
        before = self._member_ids(group)
        killed = self.clock()
        pid = self.services.signal(fault.target, signal.SIGKILL)
        ok = self._wait(lambda: self._new_member_assigned(group, client, before))
        return Outcome(fault, pid, killed - t0, round(self.clock() - killed, 1) if ok else None, f"group {group}")

    def _wait(self, check: Callable[[], bool]) -> bool:
        deadline = self.clock() + self.timeout
        while self.clock() < deadline:
            with contextlib.suppress(Exception):  # a probe during the fault may fail: ask again
                if check():
                    return True
            time.sleep(0.25)
        return False

    def _fully_replicated(self) -> bool:
        md = self.admin.list_topics(timeout=5)
        if len(md.brokers) < len(self.cluster.nodes):
            return False
        for name in self.topics:
            t = md.topics.get(name)
            if t is None or t.error:
                return False
            if any(len(p.isrs) < len(p.replicas) for p in t.partitions.values()):
                return False
        return True

    def _describe(self, group: str) -> Any:
        return self.admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)

    def _member_ids(self, group: str) -> set[str]:
        try:
            return {m.member_id for m in self._describe(group).members}
        except Exception:  # noqa: BLE001 - no group yet
            return set()

    def _new_member_assigned(self, group: str, client: str, before: set[str]) -> bool:
        desc = self._describe(group)
        if str(desc.state).rsplit(".", 1)[-1] != "STABLE":
            return False
        return any(
            m.client_id == client and m.member_id not in before and m.assignment.topic_partitions
            for m in desc.members
        )
