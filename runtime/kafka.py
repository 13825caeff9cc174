"""Small read-only Kafka helpers shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from typing import Any, NamedTuple, TypeVar

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from runtime.kafka_logs import kafka_log_config
from schemas.errors import InfraError, SchemaError
from schemas.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors a broker gives while it is still settling (a just-created topic's leader not yet
# serving, a controller move, a connection not yet up): asking again shortly is the fix.
TRANSIENT_CODES = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_CONTROLLER,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._WAIT_COORD,
})  # fmt: skip


def is_transient(exc: BaseException) -> bool:
    """A KafkaException that asking again can fix (retriable, or a leader/metadata race)."""
    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return False
    err: KafkaError = exc.args[0]
    return err.retriable() or err.code() in TRANSIENT_CODES


def retry_transient(call: Callable[[], T], what: str, *, timeout: float = 60.0, pause: float = 0.25) -> T:
    """``call()``, asked again with backoff while it fails transiently, for up to ``timeout`` s.

    For start-up metadata calls (watermarks, listings, committed offsets): a fresh broker or a
    just-created topic answers NOT_LEADER_FOR_PARTITION or a timeout for a moment, and a worker
    that dies of that makes every end-to-end run flaky. One log line per call that had to wait.
    """
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            result = call()
        except KafkaException as exc:
            if not is_transient(exc) or time.monotonic() + pause > deadline:
                raise
            if not waited:
                log.info("%s: %s; retrying for up to %.0fs", what, exc.args[0], timeout)
                waited = True
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        if waited:
            log.info("%s: succeeded after retrying", what)
        return result


def _probe(settings: Settings, group: str | None = None) -> Consumer:
    return Consumer(
        settings.confluent_config(**{
            "group.id": group or f"probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False, **kafka_log_config(log),
        })
    )


def end_offsets(settings: Settings, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """High watermarks per partition; waits out leader elections of freshly created topics."""
    c = _probe(settings)
    try:
        return retry_transient(lambda: high_watermarks(c, topic), f"end offsets of {topic}", timeout=timeout)
    finally:
        c.close()


def high_watermarks(consumer: Consumer, topic: str, partitions: Iterable[int] | None = None) -> dict[int, int]:
    """{partition: high watermark} of ``topic`` (all its partitions unless named), one try."""
    if partitions is None:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}


def watermarks(consumer: Consumer, topic: str, partitions: Iterable[int], *, timeout: float = 60.0) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)}, retried while the broker settles (a just-created topic)."""
    parts = list(partitions)
    return retry_transient(
        lambda: {p: tuple(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)) for p in parts},
        f"watermarks of {topic}", timeout=timeout,
    )  # fmt: skip


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    c = _probe(settings, group)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def wait_caught_up(settings: Settings, group: str, topic: str, timeout: float = 60.0) -> bool:
    """True once ``group`` has committed everything currently in ``topic``."""
    target = end_offsets(settings, topic)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = committed_offsets(settings, group, topic)
        if all(end == 0 or done.get(p, -1) >= end for p, end in target.items()):
            return True
        time.sleep(0.5)
    return False


class Sample(NamedTuple):
    seconds: float  # since the watch started (or since ``start``)
    committed: int  # events of the topic covered by the group's committed offsets


def watch_commits(
    settings: Settings,
    group: str,
    topic: str,
    total: int,
    alive: Callable[[], bool],
    *,
    start: float | None = None,
    poll: float = 0.5,
    stall: float = 180.0,
    timeout: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[Sample]:
    """(time, committed) samples until ``group`` committed ``total`` events of ``topic``, the
    worker died (``alive()`` false), ``timeout`` passed, or nothing moved for ``stall`` s.

    One long-lived client asks for the group's committed offsets (OffsetFetch, no group
    membership): a new client per look would cost the watched worker CPU.
    """
    start = time.monotonic() if start is None else start
    probe = _probe(settings, group)
    samples: list[Sample] = []
    best, progress_at = 0, time.monotonic()
    try:
        parts = [TopicPartition(topic, p) for p in probe.list_topics(topic, timeout=10).topics[topic].partitions]
        while alive():
            try:
                n = sum(max(tp.offset, 0) for tp in probe.committed(parts, timeout=10))
            except KafkaException:  # the group coordinator is not ready yet
                n = best
            now = time.monotonic()
            samples.append(Sample(now - start, n))
            if n > best:
                best, progress_at = n, now
                if on_progress:
                    on_progress(n)
            if n >= total or now - progress_at > stall or (timeout is not None and now - start > timeout):
                break
            time.sleep(poll)
    finally:
        probe.close()
    return samples


def iter_topic(
    settings: Settings,
    topic: str,
    *,
    start: str | Mapping[int, int] = "beginning",
    decode: Callable[[Any], Any] | None = None,
    until_end: bool = False,
    idle: float | None = None,
    timeout: float | None = None,
    stop: Callable[[], bool] | None = None,
    on_error: Callable[[str], None] | None = None,
    poll: float = 0.5,
    busy: Callable[[], bool] | None = None,
) -> Iterator[Any]:
    """Records of every partition of ``topic`` (decoded by ``decode(msg)``, or the raw
    confluent messages), read by assignment: no group membership, nothing committed, so
    any number of readers can run side by side.

    Start: ``"beginning"``, ``"end"`` or {partition: offset}. It stops at the first of:
    ``until_end`` and every partition read up to its end as of the start (then, with
    ``idle``, once nothing came for ``idle`` s); without ``until_end``, ``idle`` s with no
    record (but while ``busy()`` says more may come, the idle clock starts again); ``timeout``
    s in all; ``stop()`` true; or the caller leaving the loop.
    Consumer errors (not end-of-partition) and records ``decode`` rejects with a
    SchemaError go to ``on_error`` and are skipped.
    """
    c = _probe(settings)
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise InfraError(f"topic {topic}: {meta.error if meta else 'not found'}; run driftctl up")
        parts = sorted(meta.partitions)
        if isinstance(start, Mapping):
            offsets = {p: start.get(p, OFFSET_BEGINNING) for p in parts}
        elif start in ("beginning", "end"):
            offsets = dict.fromkeys(parts, OFFSET_BEGINNING if start == "beginning" else OFFSET_END)
        else:
            raise ValueError(f"start must be 'beginning', 'end' or {{partition: offset}}, got {start!r}")
        ends: dict[int, int] = {}
        if until_end:
            for p, (low, high) in watermarks(c, topic, parts).items():
                first = offsets[p] if offsets[p] >= 0 else (low if offsets[p] == OFFSET_BEGINNING else high)
                if high > first:
                    ends[p] = high
        c.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
        began = last = time.monotonic()
        while True:
            now = time.monotonic()
            if stop is not None and stop():
                return
            if timeout is not None and now - began >= timeout:
                return
            if until_end and not ends and (idle is None or now - last >= idle):
                return
            if not until_end and idle is not None and now - last >= idle:
                if busy is None or not busy():
                    return
                last = now
            msg = c.poll(poll)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF and on_error is not None:
                    on_error(f"{topic}: {err}")
                continue
            last = time.monotonic()
            p = msg.partition()
            if p in ends and msg.offset() >= ends[p] - 1:
                del ends[p]
            if decode is None:
                yield msg
                continue
            try:
                record = decode(msg)
            except SchemaError as exc:
                if on_error is not None:
                    on_error(f"{topic}[{p}]@{msg.offset()}: {exc}")
                continue
            yield record
    finally:
        c.close()


def group_is_catching_up(
    settings: Settings, group: str, topic: str, stall_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], bool]:
    """A ``busy`` check for :func:`iter_topic`: ``group`` has not yet committed ``topic`` up to
    its end as of the first check, and its commits moved within ``stall_seconds`` (default:
    twice the worker's checkpoint interval, plus 5 s). The target is fixed at the first check,
    so a live producer cannot keep a reader waiting forever; a group that stopped, or never
    ran, is not busy."""
    stall = 2 * settings.snapshot_every_seconds + 5 if stall_seconds is None else stall_seconds
    state: dict[str, Any] = {"target": None, "committed": None, "moved_at": 0.0}

    def busy() -> bool:
        try:
            if state["target"] is None:
                state["target"] = end_offsets(settings, topic, timeout=10)
            done = committed_offsets(settings, group, topic)
        except KafkaException:
            return False
        target: dict[int, int] = state["target"]
        now = clock()
        committed = {p: max(done.get(p, 0), 0) for p in target}
        if committed != state["committed"]:
            state["committed"], state["moved_at"] = committed, now
        behind = any(committed[p] < end for p, end in target.items())
        return behind and now - state["moved_at"] < stall

    return busy


def value_decoder(decode: Callable[[bytes], Any]) -> Callable[[Any], Any]:
    """``decode`` over a message's value, for :func:`iter_topic`'s ``decode``: a tombstone
    (no value) is a SchemaError, which the reader reports and skips."""

    def decode_message(msg: Any) -> Any:
        value = msg.value()
        if value is None:
            raise SchemaError("a tombstone (no value)")
        return decode(value)

    return decode_message


def read_topic(settings: Settings, topic: str, **kwargs: Any) -> list[Any]:
    """:func:`iter_topic` into a list (``until_end=True`` unless said otherwise)."""
    kwargs.setdefault("until_end", True)
    with closing(iter_topic(settings, topic, **kwargs)) as records:
        return list(records)


def group_assignment(admin: Any, group: str, timeout: float = 10.0) -> dict[str, list[tuple[str, int]]] | None:
    """{member's client id: [(topic, partition), ...]} of a *stable* consumer group, else None
    (rebalancing, empty, or unknown). ``admin`` is an ``AdminClient``; one try, no retries."""
    description = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
    if description.state.name != "STABLE":
        return None
    return {
        m.client_id: sorted((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment else []))
        for m in description.members
    }
