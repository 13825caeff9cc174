"""Decoded alerts from ``drift.alerts``, one JSON object per line."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import closing
from typing import Any, TextIO

from runtime.kafka import iter_topic, value_decoder
from runtime.kafka_groups import group_is_catching_up
from schemas.codec import ALERT
from schemas.settings import Settings


def tail_alerts(
    settings: Settings,
    on_alert: Callable[[dict[str, Any]], None],
    from_beginning: bool = False,
    follow: bool = False,
    idle_timeout: float = 10.0,
    on_error: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Read alerts until ``idle_timeout`` seconds pass with none (or forever with ``follow``).

    Idle time counts only once the streams worker has caught up with the events topic (or
    stopped moving): right after ``driftctl produce`` the worker may still be minutes from
    the drifts, and a tail that gave up after 30 quiet seconds would miss every alert.

    Reads all partitions by assignment (no group membership, nothing committed), so
    any number of tails can run side by side without moving anyone's offsets.
    """
    count = 0
    records = iter_topic(
        settings,
        settings.topics.alerts,
        start="beginning" if from_beginning else "end",
        decode=value_decoder(ALERT.decode),
        idle=None if follow else idle_timeout,
        stop=stop,
        on_error=on_error,
        busy=group_is_catching_up(settings, settings.app_id, settings.topics.events),
    )
    with closing(records):
        for alert in records:
            count += 1
            on_alert(alert)
    return count


def print_json(out: TextIO) -> Callable[[dict[str, Any]], None]:
    def emit(alert: dict[str, Any]) -> None:
        out.write(json.dumps(alert, separators=(",", ":")) + "\n")
        out.flush()

    return emit
