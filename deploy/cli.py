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
    from deploy.broker import LOCAL_HOSTS, LocalBroker
    from runtime.topics import ensure_topics

    broker = LocalBroker(settings)
    if broker.host in LOCAL_HOSTS and "," not in settings.kafka_bootstrap:
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

    LocalBroker(settings).down()
    print("broker stopped")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.broker import LocalBroker

    status = LocalBroker(settings).status()
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
    return 0 if status.get("running") else 1


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.services import SERVICES, start_services

    names = tuple(args.only.split(",")) if args.only else SERVICES
    group = start_services(settings, names)
    print(f"running {', '.join(names)}; Ctrl-C stops them", file=sys.stderr)
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping:
        dead = [n for n, ok in group.alive().items() if not ok]
        if dead:
            print(f"service(s) exited: {', '.join(dead)}; stopping the rest", file=sys.stderr)
            break
        time.sleep(0.5)
    codes = group.stop()
    print(f"stopped: {codes}", file=sys.stderr)
    return 0 if stopping and all(c in (0, -signal.SIGTERM) for c in codes.values()) else 1


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


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.suite == "detect":
        from deploy.bench_detect import run_detect_bench

        result = run_detect_bench(settings, out=sys.stdout, quick=args.quick)
    elif args.suite == "retrain":
        from deploy.bench_retrain import run_retrain_bench

        result = run_retrain_bench(settings, out=sys.stderr, quick=args.quick)
    elif args.suite == "rollout":
        from deploy.bench_rollout import run_rollout_bench

        result = run_rollout_bench(settings, out=sys.stderr, quick=args.quick)
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
    sub.add_parser("up", help="start the local broker, create topics, apply the ClickHouse schema").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the local broker").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="broker, topics and ClickHouse as JSON").set_defaults(fn=cmd_status)
    r = sub.add_parser("run", help="all services in the foreground; Ctrl-C stops them")
    from deploy.services import SERVICES

    r.add_argument("--only", help=f"comma-separated subset of {','.join(SERVICES)}")
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
    b.add_argument("suite", choices=("detect", "throughput", "retrain", "rollout"))
    b.add_argument("--quick", action="store_true", help="a small version of the suite")
    b.add_argument("--events", type=int, default=200_000, help="events for the throughput suite")
    b.add_argument("--json", action="store_true", help="also print the result as one JSON line")
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
        print(f"driftctl {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `driftctl query ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
