"""schemas.settings: bad values fail naming the env var; security settings reach the clients."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the DRIFT_* variables they set."""
    for name in list(os.environ):
        if name.startswith("DRIFT_"):
            monkeypatch.delenv(name)


def sasl_env(monkeypatch: pytest.MonkeyPatch, password: str = "s3cr3t-pw") -> None:
    monkeypatch.setenv("DRIFT_KAFKA_BOOTSTRAP", "kafka-1.example:9093,kafka-2.example:9093")
    monkeypatch.setenv("DRIFT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DRIFT_KAFKA_SASL_USERNAME", "drift")
    monkeypatch.setenv("DRIFT_KAFKA_SASL_PASSWORD", password)
    monkeypatch.setenv("DRIFT_KAFKA_SSL_CAFILE", str(SSL_DIR / "ca.pem"))  # the files must exist


SSL_DIR = Path(tempfile.mkdtemp(prefix="drift-ssl-"))
for _name in ("ca.pem", "client.pem", "client.key"):
    (SSL_DIR / _name).write_text("placeholder: only its path is read here\n")


def test_defaults() -> None:
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092" and s.bootstrap_port == 9092
    assert s.kafka_version == "3.9.1"
    assert s.topics.all() == [
        "drift.events", "drift.events.dlq", "drift.stats",
        "drift.alerts", "drift.retrain.requests", "drift.retrain.results", "drift.models",
    ]  # fmt: skip
    assert s.confluent_config() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "plaintext"}


def test_env_is_read_and_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFT_TOPIC_PREFIX", "prod")
    monkeypatch.setenv("DRIFT_EVENTS_PARTITIONS", "12")
    monkeypatch.setenv("DRIFT_RUN_DIR", "/var/lib/drift")
    s = load_settings(topic_prefix="t123")
    assert s.topics.events == "t123.events"
    assert s.events_partitions == 12
    assert s.run_dir == Path("/var/lib/drift")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DRIFT_KAFKA_SECURITY_PROTOCOL", "FOO"),
        ("DRIFT_KAFKA_BOOTSTRAP", "localhost"),
        ("DRIFT_KAFKA_BOOTSTRAP", "host:port"),
        ("DRIFT_EVENTS_PARTITIONS", "0"),
        ("DRIFT_REPLICATION_FACTOR", "three"),
        ("DRIFT_RETENTION_MS", "1000"),
        ("DRIFT_TOPIC_PREFIX", "bad prefix!"),
        ("DRIFT_KAFKA_SASL_MECHANISM", "GSSAPI"),
    ],
)
def test_bad_value_names_the_env_var(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert var in str(exc.value)
    assert repr(value) in str(exc.value)  # and shows what it got


def test_sasl_without_credentials_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFT_KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert "DRIFT_KAFKA_SASL_USERNAME" in msg and "DRIFT_KAFKA_SASL_PASSWORD" in msg


def test_sasl_password_alone_is_not_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFT_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("DRIFT_KAFKA_SASL_PASSWORD", "pw")
    with pytest.raises(ConfigError, match="DRIFT_KAFKA_SASL_MECHANISM"):
        load_settings()


def test_confluent_config_carries_sasl_and_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch)
    monkeypatch.setenv("DRIFT_KAFKA_SSL_CERTFILE", str(SSL_DIR / "client.pem"))
    monkeypatch.setenv("DRIFT_KAFKA_SSL_KEYFILE", str(SSL_DIR / "client.key"))
    monkeypatch.setenv("DRIFT_KAFKA_SSL_KEY_PASSWORD", "keypw")
    conf = load_settings().confluent_config(**{"group.id": "g"})
    assert conf == {
        "bootstrap.servers": "kafka-1.example:9093,kafka-2.example:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "drift",
        "sasl.password": "s3cr3t-pw",
        "ssl.ca.location": str(SSL_DIR / "ca.pem"),
        "ssl.certificate.location": str(SSL_DIR / "client.pem"),
        "ssl.key.location": str(SSL_DIR / "client.key"),
        "ssl.key.password": "keypw",
        "group.id": "g",
    }


def test_producer_config_is_durable_and_keeps_security(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch)
    conf = load_settings().producer_config()
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["sasl.password"] == "s3cr3t-pw" and conf["security.protocol"] == "sasl_ssl"
    assert load_settings().producer_config(acks="1")["acks"] == "1"  # explicit extras win


def test_password_is_secret_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch, password="hunter2-very-secret")
    s = load_settings()
    assert isinstance(s.kafka_sasl_password, SecretStr)
    assert s.kafka_sasl_password.get_secret_value() == "hunter2-very-secret"
    for shown in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert "hunter2-very-secret" not in shown


def test_secret_not_leaked_in_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch, password="hunter2-very-secret")
    monkeypatch.setenv("DRIFT_KAFKA_SECURITY_PROTOCOL", "NOPE")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert "hunter2-very-secret" not in str(exc.value)


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="DRIFT_NO_SUCH_SETTING"):
        load_settings(no_such_setting=1)


def test_settings_class_is_the_one_model() -> None:
    assert isinstance(load_settings(), Settings)
