"""``driftctl bench chaos``: the guarantees under sustained load while parts die.

On a local three-node cluster (started here unless one runs), with every service under
``driftctl run``'s supervisor: a producer sends a scenario with planned drifts (deploy/
scenarios.py) at a steady rate while a seeded schedule (deploy/chaos_faults.py) ``kill -9``s,
one at a time, a broker, the streams worker, the sink, the router and the retrain worker,
and restarts each (the broker here, the services by the supervisor). Then it checks, from
what landed in Kafka and ClickHouse:

- **lost**: acknowledged events missing from the events topic or from the streams worker's
  commits (target 0);
- **duplicates**: repeated rows in any named query of deploy/clickhouse/queries (target 0);
- **alert ids** equal to a fault-free run of the same events: the pure monitor replayed
  offline over the events topic as it stands (same partitions and offsets, so the same ids);
- **retrain decisions**: one decision per request, however often a request was re-delivered;
- **recovery** seconds per fault (target: every one within 30 s);
- **crashes**: deaths the schedule did not cause.

Fuzz: malformed messages mixed into the load come from ``deploy.fuzz:malformed_messages`` when
that module exists (:data:`FUZZ_GENERATOR`); without it ``fuzz_sent`` is 0.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import Producer
from pydantic import SecretStr

from deploy.chaos_faults import Injector, schedule
from deploy.cluster import LocalCluster
from deploy.scenarios import Drift, Scenario
from deploy.services import SERVICES, RestartPolicy, start_services
from runtime.kafka import (
    committed_offsets,
    end_offsets,
    iter_topic,
    read_topic,
    value_decoder,
    wait_caught_up,
)
from runtime.topics import ensure_topics
from schemas.codec import ALERT, DEAD_LETTER, EVENT, RETRAIN_RESULT
from schemas.settings import Settings

BROKERS = 3
FUZZ_GENERATOR = "deploy.fuzz:malformed_messages"  # (seed, n) -> iterable of (key, value) bytes; safety's
TABLE_KEYS = {
    "drift_stats": "stat_id",
    "drift_alerts": "alert_id",
    "dead_letters": "(source_topic, source_partition, source_offset)",
    "retrain_requests": "request_id",
    "retrain_results": "request_id",
    "model_rollouts": "update_id",
}
TARGET_RECOVERY_SECONDS = 30.0


def chaos_settings(settings: Settings, bootstrap: str, tag: str, work: Path) -> Settings:
    return settings.model_copy(update={
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"chaos{tag}",
        "app_id": f"chaos-{tag}",
        "sink_group": f"chaos-{tag}-sink",
        "router_group": f"chaos-{tag}-router",
        "retrain_group": f"chaos-{tag}-retrain",
        "worker_id": f"chaos-{tag}",
        "clickhouse_dsn": SecretStr(f"chdb:{work / 'clickhouse'}"),
        "registry_dir": work / "models",
        "snapshot_every_seconds": 2.0,
        "streams_session_timeout_seconds": 6.0,
        "kafka_session_timeout_seconds": 6.0,
        "router_coalesce_seconds": 3.0,
        "router_cooldown_seconds": 30.0,
    })  # fmt: skip


def chaos_scenario(events: int, seed: int) -> Scenario:
    slices = tuple(f"region-{i}" for i in range(8))
    per = -(-events // len(slices))
    drifts = (
        Drift("region-1", "amount", int(per * 0.35)),
        Drift("region-3", "latency_ms", int(per * 0.5), kind="scale"),
        Drift("region-5", "device", int(per * 0.45), kind="category_mix", size=4.0),
        Drift("region-6", None, int(per * 0.6), kind="error_rate", size=3.0),
    )
    return Scenario(model=f"chaos-model-{seed}", slices=slices, events_per_slice=per, drifts=drifts, seed=seed)


def _fuzz(seed: int, n: int) -> list[tuple[bytes | None, bytes | None]] | None:
    module, _, func = FUZZ_GENERATOR.partition(":")
    try:
        gen = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        return None
    return list(gen(seed, n))


class Load:
    """Produces the scenario at ``rate`` events/s (plus fuzz) and counts acknowledgements."""

    def __init__(self, settings: Settings, events: list[dict], rate: float, fuzz: list | None) -> None:
        self.settings, self.events, self.rate, self.fuzz = settings, events, rate, fuzz or []
        self.acked_ids: set[str] = set()
        self.failed: list[str] = []
        self.fuzz_acked = 0
        self.seconds = 0.0  # from the first send to the last acknowledgement
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def _run(self) -> None:
        p = Producer(self.settings.producer_config(**{"linger.ms": 20}))
        topic = self.settings.topics.events
        began = time.monotonic()
        every = max(1, len(self.events) // max(1, len(self.fuzz))) if self.fuzz else 0
        fuzz = iter(self.fuzz)

        def acked(eid: str | None):
            def cb(err, _msg) -> None:
                if err is not None:
                    self.failed.append(str(err))
                elif eid is None:
                    self.fuzz_acked += 1
                else:
                    self.acked_ids.add(eid)
            return cb

        for i, ev in enumerate(self.events):
            if every and i % every == 0:
                key, value = next(fuzz, (None, None))
                if value is not None:
                    self._send(p, topic, key, value, acked(None))
            self._send(p, topic, ev["slice"].encode(), EVENT.encode(ev), acked(ev["event_id"]))
            if i % 500 == 0:
                p.poll(0)
                ahead = began + i / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        p.flush(300)
        self.seconds = time.monotonic() - began
        self.done.set()

    @staticmethod
    def _send(p: Producer, topic: str, key: bytes | None, value: bytes, cb) -> None:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=cb)
                return
            except BufferError:
                p.poll(0.1)


def fault_free_alert_ids(run: Settings) -> tuple[set[str], int]:
    """The pure monitor over the events topic as it stands: the alerts a run without faults makes."""
    from streams.config import build_monitor
    from streams.processing import Message, handle_batch

    monitor = build_monitor(run)
    ids: set[str] = set()
    batch: list[Message] = []
    n = 0

    def flush() -> None:
        out = handle_batch(monitor, batch, int(time.time() * 1000))
        ids.update(ALERT.decode(v)["alert_id"] for _k, v in out.alerts)
        batch.clear()

    for m in iter_topic(run, run.topics.events, until_end=True):
        batch.append(Message(m.key(), m.value(), m.topic(), m.partition(), m.offset(), m.timestamp()[1]))
        n += 1
        if len(batch) >= 5000:
            flush()
    flush()
    return ids, n


def store_counts(run: Settings) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Rows per table (raw and distinct ids), and repeated rows per named query."""
    from consumers.store import open_clickhouse, query
    from deploy.queries import named_queries

    client = open_clickhouse(run)
    tables = {}
    for table, key in TABLE_KEYS.items():
        _c, rows = query(client, f"SELECT count(), uniqExact({key}) FROM {table}")
        tables[table] = {"raw": int(rows[0][0]), "distinct": int(rows[0][1])}
    dupes = {}
    for name, q in named_queries().items():
        _c, rows = query(client, q.sql, q.parameters())
        dupes[name] = len(rows) - len({tuple(map(str, r)) for r in rows})
    return tables, dupes


def run_chaos_bench(settings: Settings, out: TextIO = sys.stdout, *, events: int = 200_000, rate: float = 1500.0,
                    seed: int = 7, fuzz: int = 10_000) -> dict[str, Any]:  # fmt: skip
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    t_start = time.monotonic()
    tag = uuid.uuid4().hex[:6]
    work = Path(settings.run_dir).resolve() / "bench" / f"chaos-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(settings, BROKERS)
    started_cluster = not cluster.status()["running"]
    say(f"[1/6] {BROKERS}-broker cluster at {cluster.bootstrap} ({'starting' if started_cluster else 'running'})")
    cluster.up()
    run = chaos_settings(settings, cluster.bootstrap, tag, work)
    ensure_topics(run)
    scenario = chaos_scenario(events, seed)
    evs = list(scenario.events())
    malformed = _fuzz(seed, fuzz) if fuzz else []
    say(f"[2/6] {len(evs):,} events ({len(scenario.slices)} slices, {len(scenario.drifts)} planned drifts) at "
        f"{rate:,.0f}/s; fuzz: {f'{len(malformed)} malformed' if malformed is not None else 'no generator'}")  # fmt: skip
    group = start_services(run, SERVICES, log_dir=work / "logs", policy=RestartPolicy(initial=0.5, maximum=10.0))
    stop_supervising = threading.Event()

    def supervise() -> None:
        while not stop_supervising.is_set():
            group.supervise()
            time.sleep(0.25)

    supervisor = threading.Thread(target=supervise, name="supervisor", daemon=True)
    supervisor.start()
    wid = run.worker_id
    groups = {"streams": (run.app_id, wid), "sink": (run.sink_group, f"drift-sink-{wid}"),
              "router": (run.router_group, f"drift-router-{wid}"),
              "retrain": (run.retrain_group, f"drift-retrain-{wid}")}  # fmt: skip
    injector = Injector(run, cluster, group, groups, run.topics.all())
    plan = schedule(seed, BROKERS)
    load = Load(run, evs, rate, malformed)
    try:
        time.sleep(10)  # the services join their groups
        t0 = time.monotonic()
        load.thread.start()
        say(f"[3/6] load running; faults: {', '.join(f.target + (f'#{f.node}' if f.node else '') for f in plan)}")
        for fault in plan:
            time.sleep(fault.wait)
            o = injector.inject(fault, t0)
            say(f"  {o.killed_at:6.1f}s kill -9 {fault.target:<7} {o.detail:<28} back in {o.recovered_seconds}s")
        load.done.wait()
        say(f"[4/6] load sent in {load.seconds:.0f}s: {len(load.acked_ids):,} acknowledged; draining")
        caught = wait_caught_up(run, run.app_id, run.topics.events, timeout=600)
        time.sleep(3 * run.sink_flush_seconds + run.snapshot_every_seconds)
        for topic in (run.topics.alerts, run.topics.stats, run.topics.dlq, run.topics.retrain_results):
            wait_caught_up(run, run.sink_group, topic, timeout=300)
        time.sleep(5)
    finally:
        stop_supervising.set()
        supervisor.join(5)
        codes = group.stop()  # the cluster stays up until the checks below have read it
    planned = {f.target for f in plan if f.target != "broker"}
    crashes = sum(n - (1 if k in planned else 0) for k, n in group.restarts().items())
    say(f"[5/6] services stopped {codes}; restarts {group.restarts()}; checking")
    try:
        result = _verify(run, load, caught, say)
    finally:
        if started_cluster:
            cluster.down()
    recov = [o.recovered_seconds for o in injector.outcomes]
    result.update(
        brokers=BROKERS, seed=seed, crashes=crashes, restarts=group.restarts(),
        faults=[{"target": o.fault.target, "node": o.fault.node, "at_seconds": round(o.killed_at, 1),
                 "recovery_seconds": o.recovered_seconds} for o in injector.outcomes],
        max_recovery_seconds=None if None in recov or not recov else max(recov),
        seconds=round(time.monotonic() - t_start, 1), load_seconds=round(load.seconds, 1), work_dir=str(work),
    )  # fmt: skip
    result["targets_met"] = bool(
        result["lost"] == 0 and result["duplicates"] == 0 and result["alert_ids_equal"]
        and result["max_recovery_seconds"] is not None and result["max_recovery_seconds"] <= TARGET_RECOVERY_SECONDS
    )  # fmt: skip
    _print_table(result, say)
    return result


def _verify(run: Settings, load: Load, caught: bool, say) -> dict[str, Any]:
    topic_ids: Counter[str] = Counter()
    for m in iter_topic(run, run.topics.events, until_end=True):
        with contextlib.suppress(Exception):  # a fuzz message is no event
            topic_ids[EVENT.decode(m.value())["event_id"]] += 1
    committed = sum(max(o, 0) for o in committed_offsets(run, run.app_id, run.topics.events).values())
    topic_total = sum(end_offsets(run, run.topics.events).values())
    lost = len(load.acked_ids - set(topic_ids)) + max(0, topic_total - committed)
    alerts = read_topic(run, run.topics.alerts, decode=value_decoder(ALERT.decode), timeout=60)
    alert_ids = {a["alert_id"] for a in alerts}
    say("  replaying the events through the pure monitor (the fault-free run)")
    expected, replayed = fault_free_alert_ids(run)
    dead = read_topic(run, run.topics.dlq, decode=value_decoder(DEAD_LETTER.decode), timeout=60)
    results = read_topic(run, run.topics.retrain_results, decode=value_decoder(RETRAIN_RESULT.decode), timeout=60)
    decisions: dict[str, set[str]] = {}
    for r in results:
        decisions.setdefault(r["request_id"], set()).add(r["decision"])
    tables, dupes = store_counts(run)
    return {
        "acknowledged": len(load.acked_ids),
        "produce_failures": len(load.failed),
        "events_in_topic": topic_total,
        "events_in_topic_distinct": len(topic_ids),
        "streams_committed": committed,
        "caught_up": caught,
        "lost": lost,
        "duplicates": sum(dupes.values()),
        "named_query_duplicates": dupes,
        "tables": tables,
        "alerts": len(alerts),
        "alert_ids": len(alert_ids),
        "alert_ids_fault_free": len(expected),
        "alert_ids_equal": alert_ids == expected,
        "alert_ids_missing": sorted(expected - alert_ids)[:5],
        "alert_ids_extra": sorted(alert_ids - expected)[:5],
        "replayed_events": replayed,
        "retrain_requests_decided": len(decisions),
        "retrain_decisions": dict(Counter(d for ds in decisions.values() for d in ds)),
        "retrain_decisions_consistent": all(len(ds) == 1 for ds in decisions.values()),
        "retrain_results_raw": len(results),
        "fuzz_sent": load.fuzz_acked,
        "fuzz_dead_lettered": len({(d["source_partition"], d["source_offset"]) for d in dead}) if load.fuzz_acked else 0,
        "dead_letters": len(dead),
    }


def _print_table(r: dict[str, Any], say) -> None:
    say("[6/6] driftctl bench chaos")
    rows = [
        ("brokers", r["brokers"]), ("events acknowledged", f"{r['acknowledged']:,}"),
        ("events in the topic (distinct ids)", f"{r['events_in_topic']:,} ({r['events_in_topic_distinct']:,})"),
        ("events the streams worker committed", f"{r['streams_committed']:,}"),
        ("lost (target 0)", r["lost"]), ("duplicates in named queries (target 0)", r["duplicates"]),
        ("alerts (distinct ids)", f"{r['alerts']} ({r['alert_ids']})"),
        ("alert ids of the fault-free run", r["alert_ids_fault_free"]),
        ("alert ids equal", r["alert_ids_equal"]),
        ("retrain requests decided", f"{r['retrain_requests_decided']} {r['retrain_decisions']}"),
        ("one decision per request", r["retrain_decisions_consistent"]),
        ("crashes (unplanned deaths)", r["crashes"]),
        ("fuzz sent / dead-lettered", f"{r['fuzz_sent']} / {r['fuzz_dead_lettered']}"),
        ("max recovery seconds (target 30)", r["max_recovery_seconds"]),
    ]
    rows += [(f"  ClickHouse {t} raw (distinct)", f"{c['raw']:,} ({c['distinct']:,})") for t, c in r["tables"].items()]
    rows += [(f"  recovery {f['target']}{'#' + str(f['node']) if f['node'] else ''} at {f['at_seconds']}s",
              f"{f['recovery_seconds']}s") for f in r["faults"]]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        say(f"  {k:<{width}}  {v}")
    say(f"  targets met: {r['targets_met']}  ({r['seconds']:.0f}s in all; data in {r['work_dir']})")
