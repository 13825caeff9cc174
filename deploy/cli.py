"""``driftctl``: bring the system up, run it, feed it, watch it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from schemas.errors import DriftError
from schemas.settings import Settings, load_settings


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.store import apply_schema, open_clickhouse
    from deploy.broker import LocalBroker
    from deploy.broker_config import LOCAL_HOSTS
    from runtime.topics import ensure_topics

    broker = LocalBroker(settings)
    if args.brokers is not None and args.brokers > 1:
        from deploy.cluster import LocalCluster

        cluster = LocalCluster(settings, args.brokers)
        cluster.up()
        settings = settings.model_copy(update={"kafka_bootstrap": cluster.bootstrap})
        st = cluster.status()
        print(f"local cluster of {st['brokers']} brokers up (replication factor {st['replication_factor']}, "
              f"min.insync.replicas {st['min_insync_replicas']}); for every client:\n"
              f"  export DRIFT_KAFKA_BOOTSTRAP={cluster.bootstrap}")  # fmt: skip
    elif broker.host in LOCAL_HOSTS and "," not in settings.kafka_bootstrap:
        broker.up()
        print(f"local broker up at {settings.kafka_bootstrap}")
    else:
        print(f"using the existing cluster at {settings.kafka_bootstrap} (no local broker started)")
    created = ensure_topics(settings)
    apply_schema(open_clickhouse(settings))
    print(f"topics created: {', '.join(created) or 'none (all existed)'}")
    print("ClickHouse schema applied")
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.broker import LocalBroker
    from deploy.cluster import LocalCluster

    nodes = LocalCluster(settings).down()  # the cluster last brought up here, if any
    single = LocalBroker(settings).down()
    print(f"stopped: {nodes} cluster node(s), {'the' if single else 'no'} single broker")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.broker import LocalBroker
    from deploy.cluster import LocalCluster

    cluster = LocalCluster(settings)
    status = cluster.status() if cluster.nodes else LocalBroker(settings).status()
    try:  # with this process's own address and security settings: a wrong one shows here
        from runtime.preflight import check_kafka

        status["kafka"] = {"reachable": True, "brokers": check_kafka(settings, timeout=5.0)}
    except DriftError as exc:
        status["kafka"] = {"reachable": False, "error": str(exc)}
    try:  # through the sink's query socket while the services hold the embedded store
        from consumers.query_server import open_reader

        reader = open_reader(settings)
        try:
            _cols, rows = reader.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        finally:
            reader.close()
        status["clickhouse"] = {"reachable": True, "tables": sorted(r[0] for r in rows)}
    except Exception as exc:  # noqa: BLE001 - status reports, never fails
        status["clickhouse"] = {"reachable": False, "error": str(exc)}
    print(json.dumps(status, indent=2, default=str))
    if not status["kafka"]["reachable"]:
        print(f"driftctl status: {status['kafka']['error']}", file=sys.stderr)  # the one line to read
        return 1
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from deploy import services
    from runtime.metrics import start_metrics

    names = services.check_names(tuple(n.strip() for n in args.only.split(","))) if args.only else services.SERVICES
    workers = services.parse_workers(args.workers, names)
    slots = services.plan_slots(settings, workers)  # checks the plan before anything starts
    preflight(settings)  # the model config and the cluster: one line, before anything starts
    start_metrics(settings, "supervisor", port=services.supervisor_port(settings, slots))
    group = services.start_services(settings, names, workers=workers)
    shown = ", ".join(n if workers[n] == 1 else f"{n} x{workers[n]}" for n in names)
    print(f"running {shown}; a service that dies is restarted; Ctrl-C stops them", file=sys.stderr)
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping and group.fatal is None:
        group.supervise()  # restarts a dead service with backoff; each restart logged (WARNING)
        time.sleep(0.5)
    codes = group.stop()
    print(f"stopped: {codes}; restarts: {group.restarts()}", file=sys.stderr)
    return 0 if stopping and all(c in (0, -signal.SIGTERM) for c in codes.values()) else 1


def preflight(settings: Settings) -> None:
    """What every service would trip on at start, checked once here: one line, in seconds."""
    from runtime.preflight import check_kafka
    from streams.config import model_config

    model_config(settings)  # a bad DRIFT_DETECTION_CONFIG: ConfigError naming the file and the key
    check_kafka(settings)  # unreachable, wrong TLS or SASL: InfraError naming the setting


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.produce import produce_file

    n = produce_file(settings, Path(args.file))
    print(f"delivered {n} events to {settings.topics.events}", file=sys.stderr)
    return 0


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.alert_tail import print_json, tail_alerts

    def show_table(alert: dict) -> None:
        print(f"{alert['alert_type']:<18} {alert['severity']:<6} {alert['model']}/{alert['slice']}/{alert['feature']} "
              f"{alert['detector']} stat={alert['statistic']:.4g} thr={alert['threshold']:.4g} id={alert['alert_id']}")

    tail_alerts(
        settings,
        print_json(sys.stdout) if args.json else show_table,
        from_beginning=args.from_beginning,
        follow=args.follow,
        idle_timeout=args.timeout,
        on_error=lambda e: print(f"warning: {e}", file=sys.stderr),
    )
    return 0


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    # through the sink's query socket while `driftctl run` holds the embedded store
    from deploy.cli_monitor import run_query

    return run_query(settings, args)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.demo import run_demo

    return run_demo(settings, events_per_slice=args.events_per_slice)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.suite == "detect":
        from deploy.bench_detect import run_detect_bench

        result = run_detect_bench(settings, out=sys.stdout, quick=args.quick)
    elif args.suite == "retrain":
        from deploy.bench_retrain import run_retrain_bench

        result = run_retrain_bench(settings, out=sys.stderr, quick=args.quick)
    elif args.suite == "chaos":
        from deploy.bench_chaos import run_chaos_bench

        result = run_chaos_bench(settings, out=sys.stderr if args.json else sys.stdout, events=args.events, seed=args.seed)
    elif args.suite == "rollout":
        from deploy.bench_rollout import run_rollout_bench

        result = run_rollout_bench(settings, out=sys.stderr, quick=args.quick)
    elif args.baseline or args.workers > 1 or args.rounds > 1 or args.sink:  # side by side: plain loop, 1..N workers
        from deploy.bench_throughput import compare_throughput
        from deploy.throughput_report import format_summary

        result = compare_throughput(settings, args.events, baseline=args.baseline, workers=args.workers,
                                    rounds=args.rounds, sink=args.sink)
        print(format_summary(result))
    else:  # throughput of one streams worker
        from deploy.bench_throughput import measure_worker_throughput

        result = measure_worker_throughput(settings, args.events)
        print(f"driftctl bench throughput: {result['events_per_second']:,.0f} events/s through one streams worker "
              f"({result['measured_events']:,} events in {result['measured_seconds']:.1f}s after the first commit; "
              f"{result['slices']} slices x {result['features']} features; start-up {result['startup_seconds']:.1f}s)")
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driftctl", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start the local broker, create topics, apply the ClickHouse schema")
    u.add_argument("--brokers", type=int, metavar="N", help="a local KRaft cluster of N nodes (default: one broker)")
    u.set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the local broker or cluster").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="broker, topics and ClickHouse as JSON").set_defaults(fn=cmd_status)
    r = sub.add_parser("run", help="all services in the foreground; Ctrl-C stops them")
    from deploy.services import SERVICES

    r.add_argument("--only", help=f"comma-separated subset of {','.join(SERVICES)}")
    r.add_argument("--workers", metavar="NAME=N,...", help="processes per service in its consumer group (streams=2,retrain=2)")
    r.set_defaults(fn=cmd_run)
    pr = sub.add_parser("produce", help="JSON-lines events to the events topic")
    pr.add_argument("--file", required=True)
    pr.set_defaults(fn=cmd_produce)
    a = sub.add_parser("alerts", help="decoded alerts, one per line")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.add_argument("--from-beginning", action="store_true")
    a.add_argument("--follow", action="store_true", help="keep waiting for new alerts")
    a.add_argument("--timeout", type=float, default=10.0, help="exit after this many idle seconds")
    a.set_defaults(fn=cmd_alerts)
    q = sub.add_parser("query", help="monitoring SQL against the configured ClickHouse")
    q.add_argument("--format", choices=("table", "json", "csv"), default="table")
    q.add_argument("sql", nargs="?", help="the SQL (or use --named)")
    q.add_argument("--named", metavar="NAME", help="a ready query from deploy/clickhouse/queries (see --list)")
    q.add_argument("--param", action="append", metavar="NAME=VALUE", help="a parameter of the --named query")
    q.add_argument("--list", action="store_true", help="list the ready queries and exit")
    q.set_defaults(fn=cmd_query)
    d = sub.add_parser("demo", help="the whole story end to end on synthetic data")
    d.add_argument("--events-per-slice", type=int, default=3000)
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("bench", help="benchmarks: detect (delay, misses, false alarms, vs Evidently), throughput")
    b.add_argument("suite", choices=("detect", "throughput", "retrain", "chaos", "rollout"))
    b.add_argument("--quick", action="store_true", help="a small version of the suite")
    b.add_argument("--events", type=int, default=200_000, help="events for the throughput suite")
    b.add_argument("--baseline", action="store_true",
                   help="throughput: also the plain loop (1 consumer, fastavro, 1 ADWIN per slice x feature), and the ratio")
    b.add_argument("--workers", type=_positive_int, default=1,
                   help="throughput: also 2..N streams workers in one group, side by side with one")
    b.add_argument("--rounds", type=_positive_int, default=1,
                   help="throughput: repeat the comparison (medians are reported; for a loaded machine)")
    b.add_argument("--sink", action="store_true",
                   help="throughput: also one worker with the ClickHouse sink running beside it, and what that costs it")
    b.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    b.add_argument("--seed", type=int, default=7, help="chaos: the fault schedule's and the scenario's seed")
    b.set_defaults(fn=cmd_bench)
    # Commands of the retraining and monitoring areas live next to their code.
    from deploy import cli_monitor, cli_retrain

    cli_retrain.register(sub)
    cli_monitor.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return args.fn(load_settings(), args)
    except DriftError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message carried (YAML marks...)
        print(f"driftctl {args.command}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `driftctl query ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
