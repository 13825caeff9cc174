"""Launch the long-lived services as processes and keep them running.

Separate processes because the streams worker is CPU bound, the sink owns the embedded
ClickHouse engine (one per data path per process), and a crash in one must not take the
others down: ``driftctl run`` restarts a dead service with backoff (:class:`ServiceGroup`,
:class:`RestartPolicy`), logs each restart and counts it in
``driftwatch_service_restarts_total``. Each service package owns its ``run(settings)``;
this module only knows where it is (:data:`REGISTRY`, one line per service).

``python -m deploy.services NAME [--metrics-port P]`` runs one service in the foreground.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import IO, Any

from schemas.errors import ConfigError, InfraError
from schemas.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    name: str
    entry: str  # "package.module:function", called with the settings
    one_per_embedded_store: bool = False  # holds the embedded ClickHouse engine (one process per data path)


# The services `driftctl run` starts, in start order. A new service is one line here.
REGISTRY: tuple[Service, ...] = (
    Service("streams", "streams.worker:run"),
    Service("router", "consumers.router_service:run"),
    Service("retrain", "retrain_jobs.worker:run"),
    Service("rollout", "retrain_jobs.rollout_service:run"),
    Service("sink", "consumers.sink:run", one_per_embedded_store=True),
)
SERVICES = tuple(s.name for s in REGISTRY)
BY_NAME = {s.name: s for s in REGISTRY}
EX_CONFIG = 78  # sysexits.h: a child that exits so failed on its configuration; restarting will not help


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that hands these settings to a child process."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(f"DRIFT_{name.upper()}", None)
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"DRIFT_{name.upper()}"] = str(value)
    return env


# ------------------------------------------------------------------------------ the plan
def parse_workers(spec: str | None, names: tuple[str, ...] = SERVICES) -> dict[str, int]:
    """``"streams=2,retrain=3"`` -> processes per service (1 for the ones not named)."""
    counts = dict.fromkeys(names, 1)
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        name, sep, n = part.partition("=")
        name = name.strip()
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise ConfigError(f"--workers: expected NAME=N with N >= 1 (e.g. streams=2,retrain=2), got {part!r}")
        if name not in names:
            raise ConfigError(f"--workers: unknown service {name!r}; valid: {', '.join(names)}")
        counts[name] = int(n)
    return counts


def check_names(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise ConfigError(f"unknown service(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(SERVICES)}")
    return names


@dataclass(frozen=True)
class Slot:
    """One process of a service: the i-th (from 1) of its ``count``."""

    service: str
    index: int
    count: int
    worker_id: str
    metrics_port: int | None

    @property
    def key(self) -> str:
        return self.service if self.index == 1 else f"{self.service}-{self.index}"


def plan_slots(settings: Settings, counts: dict[str, int]) -> list[Slot]:
    """Worker ids unique within each service's consumer group and metrics ports that never
    collide: the first process of a service on its usual port (runtime/metrics.py), the
    others, and the supervisor, on the next free ports after them."""
    from runtime.metrics import service_port

    for name, n in counts.items():
        if n > 1 and BY_NAME[name].one_per_embedded_store and _embedded_store(settings):
            raise ConfigError(
                f"--workers {name}={n}: the embedded ClickHouse store is owned by one process; "
                "set DRIFT_CLICKHOUSE_DSN=clickhouse://... (a server) to run more"
            )
    firsts = {name: service_port(settings, name) for name in counts}
    used = {p for p in firsts.values() if p is not None}
    slots = []
    for name, n in counts.items():
        for i in range(1, n + 1):
            port = firsts[name] if i == 1 else _next_port(settings, used)
            wid = settings.worker_id if n == 1 else f"{settings.worker_id}-{i}"
            slots.append(Slot(name, i, n, wid, port))
    return slots


def supervisor_port(settings: Settings, slots: list[Slot]) -> int | None:
    return _next_port(settings, {s.metrics_port for s in slots if s.metrics_port is not None})


def _next_port(settings: Settings, used: set[int]) -> int | None:
    from runtime.metrics import SERVICE_PORT_OFFSETS

    if not settings.metrics_port:
        return None
    port = settings.metrics_port + len(SERVICE_PORT_OFFSETS)
    while port in used or port in {settings.metrics_port + o for o in SERVICE_PORT_OFFSETS.values()}:
        port += 1
    used.add(port)
    return port


def _embedded_store(settings: Settings) -> bool:
    return not settings.clickhouse_dsn.get_secret_value().startswith(("clickhouse://", "http://", "https://"))


# ------------------------------------------------------------------------------ restarts
@dataclass
class RestartPolicy:
    """When to restart a process that died: ``initial`` s after a first death, doubling for
    each further death that came within ``healthy_after`` s of its start, at most ``maximum``.
    Pure: the supervisor passes the times in."""

    initial: float = 0.5
    maximum: float = 30.0
    healthy_after: float = 60.0

    def delay(self, quick_deaths: int) -> float:
        return min(self.maximum, self.initial * 2 ** max(0, quick_deaths))

    def quick_deaths(self, previous: int, started: float, died: float) -> int:
        """Deaths in a row that each came soon after their start (0 after a long healthy run)."""
        return 0 if died - started >= self.healthy_after else previous + 1


@dataclass
class Process:
    slot: Slot
    popen: subprocess.Popen
    started: float
    quick_deaths: int = 0
    restart_at: float | None = None
    restarts: int = 0
    exit_code: int | None = None
    given_up: bool = False  # failed on its configuration: left dead


@dataclass
class ServiceGroup:
    """Child processes started together, supervised (:meth:`supervise`) and stopped together."""

    settings: Settings
    log_dir: Path | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    processes: dict[str, Process] = field(default_factory=dict)
    fatal: str | None = None  # a child failed on its configuration: stop everything

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        return {k: p.popen for k, p in self.processes.items()}

    def alive(self) -> dict[str, bool]:
        return {name: p.popen.poll() is None for name, p in self.processes.items()}

    def start(self, slot: Slot) -> Process:
        popen = _spawn(self.settings, slot, self.log_dir)
        proc = self.processes.get(slot.key)
        now = time.monotonic()
        if proc is None:
            proc = self.processes[slot.key] = Process(slot, popen, now)
        else:
            proc.popen, proc.started, proc.restart_at, proc.exit_code = popen, now, None, None
        return proc

    def supervise(self, now: float | None = None) -> list[str]:
        """One look at every child: schedule a restart for a new death, restart the due ones.
        Returns what happened, one line each (also logged)."""
        from runtime import metrics

        now = time.monotonic() if now is None else now
        events = []
        for key, proc in self.processes.items():
            if proc.given_up:
                continue
            if proc.restart_at is None:
                code = proc.popen.poll()
                if code is None:
                    continue
                proc.exit_code = code
                if code == EX_CONFIG:
                    proc.given_up = True
                    self.fatal = f"{key} exited on a configuration error (code {code}); not restarting it"
                    events.append(self.fatal)
                    log.error(self.fatal)
                    continue
                proc.quick_deaths = self.policy.quick_deaths(proc.quick_deaths, proc.started, now)
                delay = self.policy.delay(proc.quick_deaths - 1 if proc.quick_deaths else 0)
                proc.restart_at = now + delay
                metrics.SERVICE_UP.labels(proc.slot.service, proc.slot.worker_id).set(0)
                line = f"{key} (pid {proc.popen.pid}) exited with code {code}; restarting it in {delay:.1f}s"
                log.warning(line)
                events.append(line)
            elif now >= proc.restart_at:
                self.start(proc.slot)
                proc.restarts += 1
                metrics.SERVICE_RESTARTS.labels(proc.slot.service, proc.slot.worker_id).inc()
                metrics.SERVICE_UP.labels(proc.slot.service, proc.slot.worker_id).set(1)
                line = f"{key} restarted (pid {proc.popen.pid}, restart {proc.restarts})"
                log.warning(line)
                events.append(line)
        return events

    def restarts(self) -> dict[str, int]:
        return {k: p.restarts for k, p in self.processes.items()}

    def signal(self, key: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one child (chaos tests); returns its pid."""
        pid = self.processes[key].popen.pid
        os.kill(pid, sig)
        return pid

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        for p in self.processes.values():
            p.restart_at = None
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, p in self.processes.items():
            try:
                codes[name] = p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", name, timeout)
                p.popen.kill()
                codes[name] = p.popen.wait()
        return codes


def _spawn(settings: Settings, slot: Slot, log_dir: Path | None) -> subprocess.Popen:
    env = settings_env(settings)
    env["DRIFT_WORKER_ID"] = slot.worker_id
    argv = [sys.executable, "-m", "deploy.services", slot.service]
    if slot.metrics_port is not None:
        argv += ["--metrics-port", str(slot.metrics_port)]
    out: IO[bytes] | None = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{slot.key}.log", "ab")  # noqa: SIM115 - the child keeps its own copy of the fd
    try:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    finally:
        if out is not None:
            out.close()


def start_services(
    settings: Settings,
    names: tuple[str, ...] = SERVICES,
    log_dir: Path | None = None,
    workers: dict[str, int] | None = None,
    policy: RestartPolicy | None = None,
) -> ServiceGroup:
    """Start ``names`` (``workers[name]`` processes each, default 1). Nothing is restarted
    unless the caller calls :meth:`ServiceGroup.supervise` (``driftctl run`` does)."""
    counts = {n: (workers or {}).get(n, 1) for n in check_names(tuple(names))}
    group = ServiceGroup(settings, log_dir, policy or RestartPolicy())
    for slot in plan_slots(settings, counts):
        group.start(slot)
    return group


# ------------------------------------------------------------------------------ one child
def run_one(name: str, settings: Settings) -> Any:
    check_names((name,))
    module, _, func = BY_NAME[name].entry.partition(":")
    return getattr(import_module(module), func)(settings)


def main(argv: list[str] | None = None) -> int:
    from runtime.logs import setup_logging
    from runtime.metrics import start_metrics
    from runtime.preflight import check_kafka
    from runtime.service import tune_gc

    p = argparse.ArgumentParser(prog="python -m deploy.services", description="run one service in the foreground")
    p.add_argument("name", choices=SERVICES)
    p.add_argument("--metrics-port", type=int, help="serve /metrics here (default: DRIFT_METRICS_PORT + offset)")
    args = p.parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings, args.name)  # DRIFT_LOG_FORMAT=json: one JSON object per line
        tune_gc(settings.gc_young_threshold)
        try:  # a wrong certificate or password: ConfigError (exit 78); an absent broker is waited for
            check_kafka(settings)
        except InfraError as exc:
            logging.getLogger(__name__).warning("%s", exc)
        start_metrics(settings, args.name, port=args.metrics_port)
        run_one(args.name, settings)
    except ConfigError as exc:
        print(f"{args.name}: {' '.join(str(exc).split())}", file=sys.stderr)  # one line
        return EX_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
