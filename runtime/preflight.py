"""Start-up checks: a wrong Kafka address, TLS or SASL setting fails in seconds, in one line
naming the setting, instead of as librdkafka's endless reconnect log.

:func:`check_kafka` asks the cluster for its metadata with the process's own security
settings, librdkafka's logs silenced, and turns what librdkafka reported into one line:
a :class:`ConfigError` when a setting is wrong (a refused login, an untrusted certificate, a
TLS handshake that fails, a client property librdkafka rejects; restarting will not help)
and an :class:`InfraError` when no broker answers (it may be starting, or away).
:func:`explain` is the pure part: librdkafka error (code name and text) -> the sentence.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from schemas.errors import ConfigError, InfraError
from schemas.settings import Settings

_quiet = logging.getLogger("driftwatch.preflight.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False
_quiet.setLevel(logging.CRITICAL + 1)

_CLIENT_PROPERTIES = {
    "ssl.ca.location": "DRIFT_KAFKA_SSL_CAFILE",
    "ssl.certificate.location": "DRIFT_KAFKA_SSL_CERTFILE",
    "ssl.key.location": "DRIFT_KAFKA_SSL_KEYFILE",
    "ssl.key.password": "DRIFT_KAFKA_SSL_KEY_PASSWORD",
    "sasl.mechanism": "DRIFT_KAFKA_SASL_MECHANISM",
    "security.protocol": "DRIFT_KAFKA_SECURITY_PROTOCOL",
    "bootstrap.servers": "DRIFT_KAFKA_BOOTSTRAP",
}


def explain(settings: Settings, code: str, text: str, waited: float) -> str:
    """One line for a librdkafka failure ``code`` (e.g. ``_SSL``) with message ``text``."""
    where = settings.kafka_bootstrap
    proto = settings.kafka_security_protocol
    low = text.lower()
    if code == "_AUTHENTICATION" or "sasl authentication" in low or "invalid credentials" in low:
        return (
            f"DRIFT_KAFKA_SASL_USERNAME / DRIFT_KAFKA_SASL_PASSWORD: {where} refused the "
            f"{settings.kafka_sasl_mechanism} login of user {settings.kafka_sasl_username!r} ({_short(text)})"
        )
    if code == "_SSL" or "ssl" in low or "certificate" in low or "handshake" in low:
        if "certificate verify failed" in low or "unable to get" in low or "self-signed" in low or "self signed" in low:
            ca = settings.kafka_ssl_cafile
            hint = f"is {ca} the CA that signed it?" if ca else "set DRIFT_KAFKA_SSL_CAFILE to the CA that signed it"
            return f"DRIFT_KAFKA_SSL_CAFILE: the certificate of {where} is not trusted; {hint} ({_short(text)})"
        return (
            f"DRIFT_KAFKA_SECURITY_PROTOCOL={proto}: the TLS handshake with {where} failed; does that listener "
            f"speak TLS, and do DRIFT_KAFKA_SSL_* name the right files? ({_short(text)})"
        )
    if "security.protocol" in low or "apiversion" in low and proto != "PLAINTEXT":
        return (
            f"DRIFT_KAFKA_SECURITY_PROTOCOL={proto}: {where} closed the connection; the listener may use "
            f"another protocol ({_short(text)})"
        )
    return (
        f"DRIFT_KAFKA_BOOTSTRAP={where}: no broker answered within {waited:.0f}s ({_short(text)}); is it "
        f"running (driftctl up) and is the address right?"
    )


def _short(text: str) -> str:
    return " ".join(text.split())[:300]


def check_kafka(settings: Settings, timeout: float = 6.0) -> int:
    """Ask the cluster for metadata; the number of brokers it has, or one clear error."""
    errors: list[KafkaError] = []
    conf = settings.confluent_config(
        **{
            "error_cb": errors.append,
            "logger": _quiet,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
            "reconnect.backoff.max.ms": 1000,
        }
    )
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:
        raise ConfigError(_property_error(str(exc))) from None
    started = time.monotonic()
    last = ""
    while True:
        left = timeout - (time.monotonic() - started)
        try:
            md = admin.list_topics(timeout=max(0.5, min(1.0, left)))
            if md.brokers:
                return len(md.brokers)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            last = err.str() if isinstance(err, KafkaError) else str(exc)
        admin.poll(0)  # serves error_cb: a refused login or certificate arrives only this way
        for err in errors:
            if err.name() in ("_AUTHENTICATION", "_SSL") or err.fatal():
                _raise(explain(settings, err.name(), err.str(), time.monotonic() - started))
        if time.monotonic() - started >= timeout:
            err = errors[-1] if errors else None
            text = err.str() if err is not None else last or "no metadata"
            _raise(explain(settings, err.name() if err else "", text, timeout))


def _raise(message: str) -> None:
    if message.startswith("DRIFT_KAFKA_BOOTSTRAP"):
        raise InfraError(message)
    raise ConfigError(message)


def _property_error(text: str) -> str:
    for prop, env in _CLIENT_PROPERTIES.items():
        if prop in text:
            return f"{env}: the Kafka client refused it ({_short(text)})"
    return f"Kafka client settings refused: {_short(text)}"
