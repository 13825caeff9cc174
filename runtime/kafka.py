"""Small read-only Kafka helpers shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from typing import Any, TypeVar

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
    KafkaError._DESTROY_BROKER,  # a connection to a broker that left (killed) torn down mid-request
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._WAIT_COORD,
})  # fmt: skip


def usable(msg: Any, logger: logging.Logger, what: str = "consumer") -> bool:
    """The one poll-error policy of every consumer loop: True for a record to process.

    A fatal client error raises (the service stops and its supervisor restarts it); the end of a
    partition is no error; any other error is logged and skipped (librdkafka retries it itself).
    """
    if msg is None:
        return False
    err = msg.error()
    if err is None:
        return True
    if err.fatal():
        raise KafkaException(err)
    if err.code() != KafkaError._PARTITION_EOF:
        logger.warning("%s error: %s", what, err)
    return False


def pause_assignment(consumer: Any, pause: bool, logger: logging.Logger) -> None:
    """Pause (or resume) every assigned partition; a failure is logged, the loop goes on."""
    try:
        assignment = consumer.assignment()
        if assignment:
            (consumer.pause if pause else consumer.resume)(assignment)
    except KafkaException as exc:
        logger.warning("could not %s partitions: %s", "pause" if pause else "resume", exc)


def publish_and_wait(producer: Any, records: Iterable[tuple[str, bytes, bytes]], timeout: float) -> str | None:
    """Produce (topic, key, value) records and wait for every ack: None when all were delivered,
    else what went wrong (the delivery errors, or how many are still queued)."""
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for topic, key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    left = producer.flush(timeout)
    if errors:
        return "; ".join(errors)
    return f"{left} still queued" if left else None


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


def probe_consumer(settings: Settings, group: str | None = None) -> Consumer:
    """A client for metadata, watermarks and committed offsets (``group`` only names it: never joined)."""
    return Consumer(
        settings.confluent_config(**{
            "group.id": group or f"probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False, **kafka_log_config(log),
        })
    )


def end_offsets(settings: Settings, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """High watermarks per partition; waits out leader elections of freshly created topics."""
    c = probe_consumer(settings)
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
    c = probe_consumer(settings, group)
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
        try:
            done = committed_offsets(settings, group, topic)
        except KafkaException as exc:  # a fresh broker's group coordinator is still loading: ask again
            if not is_transient(exc):
                raise
            done = {}
        if all(end == 0 or done.get(p, -1) >= end for p, end in target.items()):
            return True
        time.sleep(0.5)
    return False


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
    c = probe_consumer(settings)
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


class RangeReadTimeout(KafkaException):
    """:func:`read_ranges` did not reach every partition's end offset in time; ``pending``:
    {partition: end offset} of those it did not."""

    def __init__(self, message: str, pending: dict[int, int]):
        super().__init__(message)
        self.pending = pending


def read_ranges(
    settings: Settings,
    topic: str,
    partitions: Iterable[int] | None = None,
    *,
    bounds: Callable[[int, int, int], tuple[int, int]] | None = None,
    timeout: float = 60.0,
    group: str | None = None,
    what: str = "range read",
    logger: logging.Logger = log,
    on_error: Callable[[Any], None] | None = None,
    consumer: Any = None,
) -> Iterator[Any]:
    """The messages of ``partitions`` of ``topic`` (all of them unless named), each partition
    from its start offset up to its end offset (exclusive), then it stops.

    ``bounds(partition, low, high)`` turns a partition's watermarks (as of the call, via
    :func:`watermarks`) into its (start, end); by default (low, high), everything retained.
    Partitions with nothing in range are left out; nothing past an end is yielded, so records
    produced meanwhile do not keep the reader going. By assignment: no group membership and
    nothing committed (``group`` only names the client, which librdkafka requires). Poll errors
    go through :func:`usable` (fatal raises, others are logged and skipped), or, if given, to
    ``on_error(msg)`` (which may raise; the reader skips the message if it returns). Raises
    :class:`RangeReadTimeout` if the ends are not all reached within ``timeout`` s.
    ``consumer``: a client to use instead of a new one (closed at the end either way).
    """
    c = consumer or Consumer(
        settings.confluent_config(**{
            "group.id": group or f"range-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest", **kafka_log_config(log),
        })
    )  # fmt: skip
    try:
        if partitions is None:
            meta = c.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                raise InfraError(f"topic {topic}: {meta.error if meta else 'not found'}; run driftctl up")
            partitions = meta.partitions
        marks = watermarks(c, topic, sorted(partitions))
        ranges = {p: bounds(p, low, high) if bounds else (low, high) for p, (low, high) in marks.items()}
        ranges = {p: (start, end) for p, (start, end) in ranges.items() if end > start}
        if not ranges:
            return
        c.assign([TopicPartition(topic, p, start) for p, (start, _) in ranges.items()])
        pending = {p: end for p, (_, end) in ranges.items()}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise RangeReadTimeout(
                    f"{what}: {topic} partitions {sorted(pending)} not read to their end offsets within {timeout:.0f}s",
                    dict(pending),
                )
            for msg in c.consume(1000, 0.5):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= pending.get(msg.partition(), msg.offset() + 1):
                        pending.pop(msg.partition(), None)  # the end was a gap (a compacted or control record)
                    continue
                if err is not None and on_error is not None:
                    on_error(msg)
                    continue
                if not usable(msg, logger, what):
                    continue
                p, offset = msg.partition(), msg.offset()
                end = pending.get(p)
                if end is None or offset >= end:
                    pending.pop(p, None)
                    continue
                yield msg
                if offset >= end - 1:
                    del pending[p]
    finally:
        c.close()


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
