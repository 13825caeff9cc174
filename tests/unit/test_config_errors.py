"""Configuration that is wrong fails at start, in one line naming the setting, within seconds
(issue 12 part 8); driftctl is run as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.broker import free_port
from runtime.preflight import explain
from schemas.errors import ConfigError
from schemas.settings import load_settings
from tests.conftest import REPO


def driftctl(args: list[str], tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    full = {**clean, "PYTHONPATH": str(REPO), "DRIFT_RUN_DIR": str(tmp_path / "run"), **env}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "deploy.cli", *args], env=full, capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    return proc, time.monotonic() - started


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, f"exit {proc.returncode}, stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_port_out_of_range_is_refused(tmp_path):
    proc, _ = driftctl(["status"], tmp_path, DRIFT_KAFKA_BOOTSTRAP="127.0.0.1:99999")
    line = one_line(proc)
    assert "DRIFT_KAFKA_BOOTSTRAP" in line and "99999" in line and "1-65535" in line


def test_one_error_is_one_error_without_a_registry_dir_echo(tmp_path):
    line = one_line(driftctl(["status"], tmp_path, DRIFT_EVENTS_PARTITIONS="0")[0])
    assert "DRIFT_EVENTS_PARTITIONS" in line and "REGISTRY_DIR" not in line


def test_ssl_files_must_exist_and_come_in_pairs(tmp_path):
    line = one_line(driftctl(["status"], tmp_path, DRIFT_KAFKA_SECURITY_PROTOCOL="SSL",
                             DRIFT_KAFKA_SSL_CAFILE=str(tmp_path / "missing.pem"))[0])  # fmt: skip
    assert "DRIFT_KAFKA_SSL_CAFILE" in line and "no such file" in line
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="DRIFT_KAFKA_SSL_KEYFILE"):
        load_settings(kafka_security_protocol="SSL", kafka_ssl_certfile=cert)
    with pytest.raises(ConfigError, match="use SSL or SASL_SSL"):
        load_settings(kafka_ssl_cafile=cert)


def test_unreachable_bootstrap_makes_run_exit_within_seconds_in_one_line(tmp_path):
    port = free_port()
    proc, seconds = driftctl(["run"], tmp_path, DRIFT_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}")
    line = one_line(proc)
    assert f"DRIFT_KAFKA_BOOTSTRAP=127.0.0.1:{port}" in line and "no broker answered" in line
    assert seconds < 30, f"took {seconds:.0f}s"


def test_ssl_against_a_closed_or_plain_port_fails_in_one_line(tmp_path):
    proc, _ = driftctl(["run"], tmp_path, DRIFT_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                       DRIFT_KAFKA_SECURITY_PROTOCOL="SSL")  # fmt: skip
    assert "DRIFT_KAFKA" in one_line(proc)


def test_status_with_tls_where_no_broker_answers_exits_non_zero_with_the_reason(tmp_path):
    proc, seconds = driftctl(["status"], tmp_path, DRIFT_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                             DRIFT_KAFKA_SECURITY_PROTOCOL="SSL")  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("driftctl status: DRIFT_KAFKA"), proc.stderr
    assert '"reachable": false' in proc.stdout and seconds < 30


def test_bad_yaml_model_config_is_one_line(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  m1: [unclosed\n   x: :\n")
    line = one_line(driftctl(["run"], tmp_path, DRIFT_DETECTION_CONFIG=str(bad))[0])
    assert str(bad) in line and "not valid YAML at line 3, column 5" in line


def test_explain_names_the_setting_for_each_librdkafka_failure():
    s = load_settings(kafka_bootstrap="b:9093", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                      kafka_sasl_username="u", kafka_sasl_password="p")  # fmt: skip
    auth = explain(s, "_AUTHENTICATION", "SASL authentication error: Authentication failed: Invalid credentials", 1)
    assert auth.startswith("DRIFT_KAFKA_SASL_USERNAME / DRIFT_KAFKA_SASL_PASSWORD") and "'u'" in auth
    untrusted = explain(s, "_SSL", "SSL handshake failed: certificate verify failed: unable to get local issuer", 1)
    assert untrusted.startswith("DRIFT_KAFKA_SSL_CAFILE")
    plain = explain(s, "_SSL", "SSL handshake failed: wrong version number", 1)
    assert plain.startswith("DRIFT_KAFKA_SECURITY_PROTOCOL=SASL_SSL")
    assert explain(s, "_TRANSPORT", "Connection refused", 6).startswith("DRIFT_KAFKA_BOOTSTRAP=b:9093")
