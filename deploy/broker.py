"""A real Apache Kafka broker on 127.0.0.1 for local runs and tests (no Docker).

KRaft mode, one JVM acting as broker and controller, assembled from Maven Central
(``deploy/kafka/pom.xml``). Everything lives under ``<run_dir>/kafka``::

    lib/              jars from `mvn dependency:copy-dependencies` (downloaded once)
    data/             log.dirs (topic data and the KRaft metadata log)
    server.properties written on every `up()`
    cluster.id        the KRaft cluster id, chosen once; storage is formatted once
    broker.pid        pid of the running JVM
    broker.log        the broker's stdout/stderr (log4j to console)

Machine-level helpers (jars, Java, ports) are in deploy/kafka_host.py; what the broker is
configured with (server.properties, the local-only checks) in deploy/broker_config.py; several
nodes as one cluster in deploy/cluster.py. Run by hand: ``python -m deploy.broker up|down|status``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deploy.broker_config import LOCAL_HOSTS, Node, check_local, server_properties
from deploy.kafka_host import (
    KAFKA_CONF_DIR,
    ensure_jars,
    find_java,
    flock,
    free_port,
    new_cluster_id,
    port_free,
    port_open,
    tail_text,
)
from schemas.errors import InfraError
from schemas.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["LOCAL_HOSTS", "LocalBroker", "Node", "free_port", "new_cluster_id", "port_free"]
LOG4J = KAFKA_CONF_DIR / "log4j.properties"

class LocalBroker:
    """Start, stop and inspect the local single-node KRaft broker of ``settings`` (or one
    ``node`` of a local cluster, see deploy/cluster.py).

    ``lib_dir`` overrides where the jars live (tests share one jar dir across sessions
    while keeping data in a temporary run dir).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        lib_dir: Path | str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        node: Node | None = None,
        extra_listener: tuple[str, int] | None = None,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # a second client listener (e.g. ("SASL_SSL", port)) and broker properties for it, beside
        # the PLAINTEXT one that up() waits on: how the TLS + SCRAM integration test gets its broker
        self.extra_listener = extra_listener
        self.extra_properties = dict(extra_properties or {})
        self.node = node or Node()
        self.home = self.node.home or Path(settings.run_dir).resolve() / "kafka"
        default_lib = Path(settings.run_dir).resolve() / "kafka" / "lib"
        self.lib_dir = Path(lib_dir).resolve() if lib_dir else default_lib
        self.data_dir = self.home / "data"
        self.properties = self.home / "server.properties"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "broker.log"
        self.cluster_id_file = self.node.cluster_id_file or self.home / "cluster.id"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        first = settings.kafka_bootstrap.split(",")[0].strip()
        self.host, _, port = first.rpartition(":")
        self.port = self.node.port or int(port)

    # ------------------------------------------------------------------ jars
    def ensure_jars(self) -> Path:
        """Download the broker's jars with Maven into ``lib_dir`` unless already there."""
        return ensure_jars(self.lib_dir, self.settings.kafka_version)

    # ------------------------------------------------------------------ lifecycle
    def up(self) -> dict[str, Any]:
        """Start the broker (format storage on first use) and wait until it answers.

        A no-op when it is already running and answering. Returns :meth:`status`.
        """
        self._check_local()
        launched = self.launch()
        if launched is None:
            return self.status()
        pid, offset = launched
        try:
            self._wait_ready(pid, log_offset=offset)
        except InfraError:
            self._stop_pid(pid)
            self.pid_file.unlink(missing_ok=True)
            raise
        return self.status()

    def launch(self) -> tuple[int, int] | None:
        """Start the JVM unless it runs (then wait until it answers and return None);
        (pid, log offset) of a new one, not yet waited for (a cluster node cannot answer
        before a quorum of its peers runs)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with flock(self.home / ".lock"):
            pid = self._running_pid()
            if pid is not None:
                self._wait_ready(pid, log_offset=0)
                return None
            self.pid_file.unlink(missing_ok=True)  # stale
            if not port_free(self.port):
                raise InfraError(
                    f"port {self.port} on 127.0.0.1 is taken by another process; stop it or choose "
                    f"another port with DRIFT_KAFKA_BOOTSTRAP=127.0.0.1:<port>"
                )
            java = self._java()
            self.ensure_jars()
            self._write_properties(self._controller_port())
            self._format_once(java)
            return self._start(java)

    def down(self) -> bool:
        """Stop the broker by PID (SIGTERM, then SIGKILL). True if one was running."""
        self.home.mkdir(parents=True, exist_ok=True)
        with flock(self.home / ".lock"):
            pid = self._running_pid()
            if pid is None:
                self.pid_file.unlink(missing_ok=True)
                return False
            self._stop_pid(pid)
            self.pid_file.unlink(missing_ok=True)
            return True

    def status(self) -> dict[str, Any]:
        pid = self._running_pid()
        topics: list[str] = []
        ready = False
        if pid is not None:
            try:
                md = self._admin().list_topics(timeout=5)
                ready = bool(md.brokers)
                topics = sorted(t for t in md.topics if not t.startswith("__"))
            except Exception:  # noqa: BLE001 - status reports, it does not raise
                ready = False
        return {
            "running": pid is not None,
            "ready": ready,
            "pid": pid,
            "bootstrap": f"{self.host}:{self.port}",
            "topics": topics,
            "log": str(self.log_file),
            "data_dir": str(self.data_dir),
        }

    # ------------------------------------------------------------------ steps
    def _check_local(self) -> None:
        check_local(self.settings, self.node, self.host)

    def _java(self) -> str:
        return find_java()

    def _controller_port(self) -> int:
        if self.node.controller_port:
            return self.node.controller_port
        if self.port < 65535 and port_free(self.port + 1):
            return self.port + 1
        return free_port()

    def _write_properties(self, controller_port: int) -> None:
        props = server_properties(
            self.settings, self.node, self.port, controller_port, self.data_dir,
            extra_listener=self.extra_listener, extra_properties=self.extra_properties,
        )  # fmt: skip
        text = "# written by deploy/broker.py on every `up`; edits are lost\n"
        text += "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties.write_text(text)

    def _format_once(self, java: str) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = self.cluster_id_file.read_text().strip() if self.cluster_id_file.is_file() else ""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cluster_id):
            cluster_id = new_cluster_id()
            self.cluster_id_file.write_text(cluster_id + "\n")
        cmd = [
            java, f"-Dlog4j.configuration={LOG4J.as_uri()}", "-cp", str(self.lib_dir / "*"),
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            "-t", cluster_id, "-c", str(self.properties),
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as exc:
            raise InfraError("formatting the Kafka storage timed out") from exc
        if proc.returncode != 0:
            raise InfraError(
                f"formatting the Kafka storage in {self.data_dir} failed (exit {proc.returncode}):\n"
                + tail_text(proc.stdout + proc.stderr, 30)
            )

    def _start(self, java: str) -> tuple[int, int]:
        cmd = [
            java,
            f"-Xmx{self.settings.broker_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration={LOG4J.as_uri()}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp", str(self.lib_dir / "*"),
            "kafka.Kafka", str(self.properties),
        ]  # fmt: skip
        with open(self.log_file, "ab") as out:
            offset = out.tell()
            out.write(
                f"\n===== driftwatch: starting broker {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode()
            )
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # survives the launching shell; not hit by its Ctrl-C
                close_fds=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        log.info("started Kafka broker pid %d on %s", self._proc.pid, self.settings.kafka_bootstrap)
        return self._proc.pid, offset

    def _wait_ready(self, pid: int, *, log_offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        admin = None
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self._alive(pid):
                code = self._proc.returncode if self._proc is not None and self._proc.pid == pid else None
                raise InfraError(
                    f"the Kafka broker (pid {pid}) exited during startup"
                    + (f" with code {code}" if code is not None else "")
                    + f"; {self.log_file}:\n{self._log_tail(log_offset)}"
                )
            if port_open(self.port):
                try:
                    admin = admin or self._admin()
                    if admin.list_topics(timeout=2).brokers:
                        return
                except Exception as exc:  # noqa: BLE001 - retried until the deadline
                    last_error = str(exc)
            time.sleep(0.2)
        raise InfraError(
            f"the Kafka broker (pid {pid}) did not answer on {self.settings.kafka_bootstrap} within "
            f"{self.start_timeout:.0f}s ({last_error}); {self.log_file}:\n{self._log_tail(log_offset)}"
        )

    def _stop_pid(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_dead(pid, self.stop_timeout):
            log.warning("Kafka broker pid %d ignored SIGTERM for %.0fs; killing it", pid, self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_dead(pid, 10):
                raise InfraError(f"could not stop the Kafka broker (pid {pid})")

    def _wait_dead(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return True
            time.sleep(0.1)
        return not self._alive(pid)

    # ------------------------------------------------------------------ helpers
    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.settings.confluent_config(**{"bootstrap.servers": f"127.0.0.1:{self.port}"}))

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._alive(pid) else None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # our child: poll() also reaps it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        proc = Path(f"/proc/{pid}")
        if proc.is_dir():  # Linux: rule out zombies and a recycled pid
            with contextlib.suppress(OSError):
                if (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                    return False
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                return b"kafka.Kafka" in cmdline and str(self.properties).encode() in cmdline
        return True

    def _log_tail(self, offset: int = 0, lines: int = 40) -> str:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(offset)
                return tail_text(fh.read().decode(errors="replace"), lines)
        except FileNotFoundError:
            return "(no log)"


# ---------------------------------------------------------------------- module helpers
def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.broker up|down|status`` (driftctl is the real front end)."""
    from schemas.settings import load_settings

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in {"up", "down", "status"}:
        print("usage: python -m deploy.broker up|down|status", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    broker = LocalBroker(load_settings())
    if args[0] == "up":
        print(json.dumps(broker.up(), indent=2))
    elif args[0] == "down":
        print("stopped" if broker.down() else "not running")
    else:
        print(json.dumps(broker.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
