"""librdkafka's log lines and client errors, through ``logging`` and throttled.

With the broker gone, every client reports every reconnect attempt (about once a second per
broker per client) twice: a ``FAIL`` log line and an ``error_cb`` call. Four services with
three clients each turned a one-minute outage into thousands of lines. Here a repeated line
(the same facility and text once digits are ignored) is logged once per ``interval`` seconds,
with how many like it were held back, so a log still says when an outage started, that it
went on, and when it ended (the first different line).

    Consumer(settings.confluent_config(**{"group.id": g, **kafka_log_config(log)}))
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

DEFAULT_INTERVAL = 30.0
_DIGITS = re.compile(r"\d+")
_SYSLOG_TO_LOGGING = {0: 50, 1: 50, 2: 50, 3: 40, 4: 30, 5: 20, 6: 20, 7: 10}


class Throttle:
    """Says whether a line with a given key may be logged now; counts the ones held back.

    Pure (time comes from ``clock``), so the policy is unit-tested without a broker.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 1000) -> None:  # fmt: skip
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()  # librdkafka calls back from its own threads (logger)

    def admit(self, key: str) -> tuple[bool, int]:
        """(log it now?, lines like it held back since the last one logged)."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            if len(self._last) >= self.max_keys and key not in self._last:
                self._forget_oldest()
            self._last[key] = now
            return True, self._held.pop(key, 0)

    def _forget_oldest(self) -> None:
        oldest = min(self._last, key=self._last.__getitem__)
        self._last.pop(oldest)
        self._held.pop(oldest, None)


def line_key(text: str) -> str:
    """Lines that differ only in numbers (ms waited, retry counts, ports) are the same line."""
    return _DIGITS.sub("#", text)


class ThrottledKafkaLogger:
    """What confluent-kafka's ``logger`` property expects (an object with ``log``)."""

    def __init__(self, logger: logging.Logger, throttle: Throttle) -> None:
        self.logger = logger
        self.throttle = throttle

    def log(self, level: int, fmt: str, *args: Any) -> None:
        text = fmt % args if args else fmt
        facility = args[0] if args else ""
        ok, held = self.throttle.admit(f"log\x1f{facility}\x1f{line_key(text)}")
        if ok:
            self.logger.log(_level(level), "librdkafka: %s%s", text, _held(held, self.throttle.interval))


def _level(level: int) -> int:
    # confluent-kafka passes logging levels; a raw syslog level (0-7) is mapped too
    return _SYSLOG_TO_LOGGING.get(level, level) if level < 8 else level


def _held(n: int, interval: float) -> str:
    return f" ({n} more like it in the last {interval:.0f}s)" if n else ""


def kafka_log_config(logger: logging.Logger, interval: float = DEFAULT_INTERVAL) -> dict[str, Any]:
    """``logger`` and ``error_cb`` properties for a confluent-kafka client, sharing one throttle.

    Client errors (``error_cb``) are the broker-level ones (transport, all brokers down): the
    client retries them itself, so they are warnings, logged once per interval; a fatal one
    (the client cannot go on) is logged every time, as an error.
    """
    throttle = Throttle(interval)

    def on_error(err: Any) -> None:
        fatal = bool(getattr(err, "fatal", lambda: False)())
        if fatal:
            logger.error("kafka client fatal error: %s", err)
            return
        ok, held = throttle.admit(f"err\x1f{err.code()}\x1f{line_key(err.str())}")
        if ok:
            logger.warning("kafka client error %s: %s%s", err.name(), err.str(), _held(held, interval))

    return {"logger": ThrottledKafkaLogger(logger, throttle), "error_cb": on_error}
