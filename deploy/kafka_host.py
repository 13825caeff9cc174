"""What the local broker needs from this machine: the Kafka jars (Maven), a Java runtime,
free ports, a lock file, a KRaft cluster id. Used by deploy/broker.py and deploy/cluster.py."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import InfraError

log = logging.getLogger(__name__)

KAFKA_CONF_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_CONF_DIR / "pom.xml"
MIN_JAVA = 11  # Kafka 3.9 brokers need Java 11+, 17 recommended
_JARS_MARKER = ".complete"


def ensure_jars(lib_dir: Path, version: str) -> Path:
    """Download the broker's jars with Maven into ``lib_dir`` unless already there."""
    if jars_present(lib_dir, version):
        return lib_dir
    mvn = shutil.which("mvn")
    if not mvn:
        raise InfraError(
            "mvn (Apache Maven) not found on PATH; it fetches the Kafka broker jars. "
            "Install it (apt-get install maven, or `make deps` as root)."
        )
    find_java()  # Maven needs a JDK/JRE as well; fail with our message, not its.
    lib_dir.parent.mkdir(parents=True, exist_ok=True)
    with flock(lib_dir.parent / ".lib.lock"):
        if jars_present(lib_dir, version):  # another process finished while we waited
            return lib_dir
        partial = lib_dir.with_name(lib_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]  # fmt: skip
        log.info("fetching Kafka %s jars with Maven into %s (first run only)", version, lib_dir)
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"mvn did not finish within {exc.timeout:.0f}s: {' '.join(cmd)}") from exc
        if proc.returncode != 0 or not (partial / f"kafka_2.13-{version}.jar").exists():
            out = tail_text((proc.stdout or "") + (proc.stderr or ""), 40)
            raise InfraError(
                f"mvn could not fetch Kafka {version} (exit {proc.returncode}); is Maven Central "
                f"reachable (or ~/.m2 populated)?\n$ {' '.join(cmd)}\n{out}"
            )
        (partial / _JARS_MARKER).write_text(version + "\n")
        shutil.rmtree(lib_dir, ignore_errors=True)
        partial.rename(lib_dir)
        log.info("Kafka jars ready in %.1fs", time.monotonic() - started)
    return lib_dir

def jars_present(lib_dir: Path, version: str) -> bool:
    marker = lib_dir / _JARS_MARKER
    return (
        marker.is_file()
        and marker.read_text().strip() == version
        and (lib_dir / f"kafka_2.13-{version}.jar").is_file()
    )


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    java = java or shutil.which("java")
    if not java:
        raise InfraError(
            "java not found (PATH or JAVA_HOME); the local Kafka broker needs Java 17 "
            "(apt-get install openjdk-17-jre-headless, or `make deps` as root)"
        )
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"cannot run {java} -version: {exc}") from exc
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if m:
        major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
        if major < MIN_JAVA:
            raise InfraError(f"{java} is Java {major}; Kafka 3.9 needs Java {MIN_JAVA}+ (17 recommended)")
    return java


def new_cluster_id() -> str:
    """A KRaft cluster id like Kafka's Uuid.randomUuid(): 22 chars of URL-safe base64.

    Like Kafka, never one starting with '-': StorageTool's argument parser would take it
    for an option ("argument --cluster-id/-t: expected one argument").
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tail_text(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
