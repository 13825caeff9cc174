"""TLS + SCRAM for real: a local broker with a SASL_SSL listener (certificates made here with
openssl, SCRAM-SHA-512 user created through the admin API), events produced through it, an
alert and its row in ClickHouse; a wrong password, an untrusted certificate and the wrong
protocol each stop `driftctl run` at start in one line naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from consumers.query_server import open_reader
from deploy.broker import LocalBroker, free_port
from deploy.produce import produce_events
from deploy.scenarios import Drift, Scenario
from deploy.services import settings_env, start_services
from runtime.preflight import check_kafka
from runtime.topics import ensure_topics
from schemas.errors import DriftError
from schemas.settings import Settings, load_settings
from tests.conftest import REPO, SHARED_LIB_DIR

USER, PASSWORD, STORE_PASSWORD = "drift-app", "s3cr3t-Scram!", "changeit"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d: Path) -> dict[str, Path]:
    """A CA, the broker's certificate for 127.0.0.1 signed by it (PKCS12 keystore), another CA."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=driftwatch test {ca}", cwd=d)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
            "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)  # fmt: skip
    openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
            "-out", "broker.p12", "-passout", f"pass:{STORE_PASSWORD}", cwd=d)  # fmt: skip
    return {"ca": d / "ca.pem", "other_ca": d / "other-ca.pem", "keystore": d / "broker.p12"}


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> tuple[Settings, Settings, dict[str, Path]]:
    """(SASL_SSL settings of the app, PLAINTEXT settings of the same broker, certificate files)."""
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    run_dir = tmp_path_factory.mktemp("tls-run")
    plain_port = free_port()
    sasl_port = free_port()
    while sasl_port in (plain_port, plain_port + 1):  # plain_port + 1 is the controller's
        sasl_port = free_port()
    prefix = f"tls{os.getpid()}"
    plain = load_settings(kafka_bootstrap=f"127.0.0.1:{plain_port}", run_dir=run_dir, topic_prefix=prefix)
    broker = LocalBroker(
        plain,
        lib_dir=SHARED_LIB_DIR,
        extra_listener=("SASL_SSL", sasl_port),
        extra_properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
            "listener.name.sasl_ssl.ssl.keystore.location": str(certs["keystore"]),
            "listener.name.sasl_ssl.ssl.keystore.password": STORE_PASSWORD,
        },
    )  # fmt: skip
    broker.up()
    try:
        admin = AdminClient(plain.confluent_config())  # users are created on the broker's own listener
        futures = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), PASSWORD.encode())])  # fmt: skip
        for f in futures.values():
            f.result(timeout=30)
        app = load_settings(
            kafka_bootstrap=f"127.0.0.1:{sasl_port}", kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username=USER, kafka_sasl_password=PASSWORD,
            kafka_ssl_cafile=certs["ca"], run_dir=run_dir, topic_prefix=prefix,
            app_id=f"{prefix}-streams", sink_group=f"{prefix}-sink", metrics_port=0,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:  # the new credential reaches the listener within moments
            try:
                check_kafka(app)
                break
            except DriftError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        ensure_topics(app)  # through SASL_SSL: the admin calls authenticate too
        yield app, plain, certs
    finally:
        broker.down()


def test_produce_alert_and_clickhouse_row_through_sasl_ssl(secure, tmp_path):
    app, _plain, _certs = secure
    group = start_services(app, ("streams", "sink"), log_dir=tmp_path / "logs")
    try:
        scenario = Scenario(events_per_slice=2000, drifts=(Drift("eu-west", "amount", 1000, size=2.0),))
        assert produce_events(app, scenario.events()) == scenario.total_events
        deadline, rows = time.monotonic() + 180, []
        while time.monotonic() < deadline and not rows:
            time.sleep(2)
            try:
                reader = open_reader(app)
            except (DriftError, OSError):
                continue  # the sink has not opened the store and its socket yet
            try:
                _cols, rows = reader.query(
                    "SELECT alert_type, feature FROM drift_alerts FINAL WHERE slice = 'eu-west' AND feature = 'amount'"
                )
            except DriftError:
                rows = []
            finally:
                reader.close()
        logs = {p.name: p.read_text()[-2000:] for p in (tmp_path / "logs").glob("*.log")}
        assert rows and rows[0] == ("DATA_DRIFT", "amount"), f"no alert row in ClickHouse; logs: {logs}"
    finally:
        codes = group.stop()
    assert all(c == 0 for c in codes.values()), codes


def run_only_streams(app: Settings, tmp_path: Path, **override: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    env.update({k: v for k, v in settings_env(app).items() if k in _APP_KEYS})
    env.update(override, PYTHONPATH=str(REPO))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "deploy.cli", "run", "--only", "streams"], env=env,
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    return proc, time.monotonic() - started


_APP_KEYS = {f"DRIFT_{k.upper()}" for k in ("kafka_bootstrap", "kafka_security_protocol", "kafka_sasl_mechanism",
             "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile", "run_dir", "topic_prefix",
             "app_id", "metrics_port")}  # fmt: skip


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_a_wrong_password_fails_at_start_naming_the_setting(secure, tmp_path):
    app, _plain, _certs = secure
    proc, seconds = run_only_streams(app, tmp_path, DRIFT_KAFKA_SASL_PASSWORD="not-the-password")
    line = one_line(proc)
    assert "DRIFT_KAFKA_SASL_USERNAME / DRIFT_KAFKA_SASL_PASSWORD" in line and USER in line
    assert "not-the-password" not in line and seconds < 30


def test_an_untrusted_certificate_fails_at_start_naming_the_setting(secure, tmp_path):
    app, _plain, certs = secure
    proc, seconds = run_only_streams(app, tmp_path, DRIFT_KAFKA_SSL_CAFILE=str(certs["other_ca"]))
    line = one_line(proc)
    assert line.startswith("driftctl run: DRIFT_KAFKA_SSL_CAFILE") and "not trusted" in line and seconds < 30


def test_tls_against_the_plaintext_listener_names_the_protocol(secure, tmp_path):
    app, plain, _certs = secure
    proc, _ = run_only_streams(app, tmp_path, DRIFT_KAFKA_BOOTSTRAP=plain.kafka_bootstrap)
    assert "DRIFT_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in one_line(proc)
