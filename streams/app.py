"""The faust app: built by a factory, its agent a short decode -> detect -> send loop.

Detector state lives in memory and is snapshotted per (model, slice) to a faust table
backed by a compacted changelog topic every ``snapshot_every_events`` events or
``snapshot_every_seconds``; a restarted or rebalanced worker restores it from there.
"""

from __future__ import annotations

import logging
import pickle
import ssl
import time

import faust

from schemas.settings import Settings
from streams.config import build_monitor
from streams.monitor import SliceState
from streams.processing import Message, handle

log = logging.getLogger(__name__)


def _credentials(settings: Settings):
    """aiokafka (through faust) security options from the same settings as confluent-kafka."""
    proto = settings.kafka_security_protocol
    ctx = None
    if proto in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
        if settings.kafka_ssl_certfile:
            ctx.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None,
            )
    if proto.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def state_key(model: str, slice_: str) -> str:
    return f"{model}\x1f{slice_}"


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        topic_partitions=settings.events_partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        processing_guarantee="at_least_once",
        web_enabled=False,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    topics = settings.topics
    events = app.topic(topics.events, key_type=bytes, value_type=bytes, partitions=settings.events_partitions)
    alerts = app.topic(topics.alerts, key_type=bytes, value_type=bytes)
    stats = app.topic(topics.stats, key_type=bytes, value_type=bytes)
    dlq = app.topic(topics.dlq, key_type=bytes, value_type=bytes)
    snapshots = app.Table(
        "detector-state",
        default=None,
        schema=faust.Schema(key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"),
        partitions=settings.events_partitions,
    )

    def load(model: str, slice_: str) -> SliceState | None:
        blob = snapshots.get(state_key(model, slice_))
        if blob:
            log.info("restored detector state for model=%s slice=%s", model, slice_)
            return pickle.loads(blob)
        return None

    monitor = build_monitor(settings, loader=load)
    last_snapshot: dict[tuple[str, str], float] = {}

    def maybe_snapshot(st: SliceState, now: float) -> None:
        key = (st.model, st.slice)
        due_by_time = now - last_snapshot.setdefault(key, now) >= settings.snapshot_every_seconds
        if st.events_since_snapshot >= settings.snapshot_every_events or due_by_time:
            st.events_since_snapshot = 0
            snapshots[state_key(st.model, st.slice)] = pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL)
            last_snapshot[key] = now

    @app.agent(events, name="detect")
    async def detect(stream):
        async for event in stream.events():
            m = event.message
            now = time.time()
            msg = Message(m.key, m.value, m.topic, m.partition, m.offset, int(m.timestamp * 1000))
            out = handle(monitor, msg, int(now * 1000))
            for key, value in out.dead_letters:
                await dlq.send(key=key, value=value)
            for key, value in out.alerts:
                await alerts.send(key=key, value=value)
            for key, value in out.stats:
                await stats.send(key=key, value=value)
            if out.state is not None:
                maybe_snapshot(out.state, now)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app, revoked, **kwargs):
        """State of partitions that moved away may change elsewhere: reload from the table."""
        gone = {tp.partition for tp in revoked if tp.topic == topics.events}
        for key in [k for k, st in monitor.slices.items() if gone & set(st.last_offset)]:
            del monitor.slices[key]
            last_snapshot.pop(key, None)

    app.monitor_state = monitor  # for introspection in tests
    return app
