"""Structured logs for the services: text or JSON lines, with Kafka coordinates as fields.

``setup_logging(settings, service)`` once per process (``DRIFT_LOG_FORMAT=json`` for one
JSON object per line). Log where a message came from with ``extra=kafka_fields(msg)`` or
a :func:`for_message` adapter; the fields ``topic``, ``partition`` and ``offset`` (and any
other ``extra``) become JSON keys, or ``key=value`` pairs after a text line:

    log.warning("undecodable message: %s", exc, extra=kafka_fields(msg))
    for_message(log, msg).info("stored")
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from schemas.settings import Settings

KAFKA_FIELDS = ("topic", "partition", "offset")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``extra=``, in a stable order (Kafka ones first)."""
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    ordered = {k: fields.pop(k) for k in KAFKA_FIELDS if k in fields}
    ordered.update(sorted(fields.items()))
    return ordered


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, service, message, extras, exception."""

    def __init__(self, service: str | None = None):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if self.service:
            entry["service"] = self.service
        entry["msg"] = record.getMessage()
        entry.update(extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The usual text line, with extras appended as ``key=value``."""

    def __init__(self, service: str | None = None):
        prefix = f"[{service}] " if service else ""
        super().__init__(f"%(asctime)s %(levelname)s {prefix}%(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extras(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return head + " " + " ".join(f"{k}={v}" for k, v in fields.items()) + sep + tail


def setup_logging(settings: Settings, service: str | None = None, level: int = logging.INFO) -> None:
    """Route the root logger to stderr in the configured format (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if settings.log_format == "json" else TextFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def kafka_fields(msg: Any) -> dict[str, Any]:
    """``extra=`` fields of a confluent_kafka Message (or anything with topic/partition/offset)."""
    return {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}


class _Adapter(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}
        return msg, kwargs


def for_message(logger: logging.Logger, msg: Any) -> logging.LoggerAdapter:
    """A logger whose records carry the message's topic, partition and offset."""
    return _Adapter(logger, kafka_fields(msg))
