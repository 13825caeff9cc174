"""Run the long-lived services, each in its own process.

Separate processes because the streams worker is CPU bound, the sink owns the embedded
ClickHouse engine (one per data path per process), and a crash in one must not take the
others down. ``python -m deploy.services NAME`` runs one service in the foreground.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas.settings import Settings, load_settings

SERVICES = ("streams", "router", "retrain", "sink")
log = logging.getLogger(__name__)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that hands these settings to a child process."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"DRIFT_{name.upper()}"] = str(value)
    return env


@dataclass
class ServiceGroup:
    """Child processes started together and stopped together."""

    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.procs.items()}

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, p in self.procs.items():
            try:
                codes[name] = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", name, timeout)
                p.kill()
                codes[name] = p.wait()
        return codes


def start_services(settings: Settings, names: tuple[str, ...] = SERVICES, log_dir: Path | None = None) -> ServiceGroup:
    env = settings_env(settings)
    group = ServiceGroup()
    argv = [sys.executable, "-m", "deploy.services"]
    for name in names:
        if log_dir is None:
            group.procs[name] = subprocess.Popen([*argv, name], env=env)
            continue
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{name}.log", "ab") as out:  # the child keeps its own copy of the fd
            group.procs[name] = subprocess.Popen([*argv, name], env=env, stdout=out, stderr=subprocess.STDOUT)
    return group


def _run_sink(settings: Settings) -> None:
    from consumers.sink import ClickHouseSink

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ClickHouseSink(settings).run(stop)


def run_one(name: str, settings: Settings) -> None:
    if name == "streams":
        from streams.worker import run

        run(settings)
    elif name == "sink":
        _run_sink(settings)
    elif name == "router":
        from consumers.router_service import run as run_router

        run_router(settings)
    elif name == "retrain":
        from retrain_jobs.worker import run as run_retrain

        run_retrain(settings)
    else:
        raise SystemExit(f"unknown service {name!r}; valid: {', '.join(SERVICES)}")


def main() -> None:
    from runtime.logs import setup_logging
    from runtime.metrics import start_metrics
    from runtime.preflight import check_kafka
    from schemas.errors import DriftError

    name = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        settings = load_settings()
        setup_logging(settings, name)  # DRIFT_LOG_FORMAT=json: one JSON object per line
        check_kafka(settings)  # a wrong address, certificate or password: one line naming the setting
        start_metrics(settings, name)  # /metrics on DRIFT_METRICS_PORT + the service's offset
        run_one(name, settings)
    except DriftError as exc:  # a bad setting or config at start: one line, exit 2, no traceback
        print(f"{name or 'service'}: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
