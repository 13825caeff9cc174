"""``driftctl report`` and the monitoring side of ``driftctl query``."""

from __future__ import annotations

import argparse
import json
import sys

from deploy.output import write_rows
from schemas.errors import ConfigError
from schemas.settings import Settings


def run_query(settings: Settings, args: argparse.Namespace) -> int:
    """``driftctl query``: SQL or a ready query by name, through the best reader (see open_reader)."""
    from consumers.query_server import open_reader
    from deploy.queries import get_query, named_queries, parse_params

    if args.list:
        for name, q in named_queries().items():
            params = ", ".join(f"{p.name}={p.default}" for p in q.params)
            print(f"{name:<18} {q.title}" + (f"  [--param {params}]" if params else ""))
        return 0
    if bool(args.sql) == bool(args.named):
        raise ConfigError("driftctl query needs either SQL or --named NAME (see driftctl query --list)")
    if args.named:
        q = get_query(args.named)
        sql, parameters = q.sql, q.parameters(parse_params(args.param))
    else:
        if args.param:
            raise ConfigError("--param goes with --named; put values into your own SQL directly")
        sql, parameters = args.sql, None
    reader = open_reader(settings)
    try:
        cols, rows = reader.query(sql, parameters)
    finally:
        reader.close()
    write_rows(cols, rows, args.format, sys.stdout)
    if reader.truncated:
        print(f"(result cut at {settings.query_max_rows} rows: DRIFT_QUERY_MAX_ROWS)", file=sys.stderr)
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.query_server import open_reader
    from deploy.report import write_report

    reader = open_reader(settings)
    try:
        summary = write_report(reader, args.out)
    finally:
        reader.close()
    print(f"wrote {summary['path']}: {summary['bytes']} bytes, {summary['plots']} plots, from {summary['source']}",
          file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the driftctl parser."""
    r = sub.add_parser("report", help="one self-contained HTML file with the monitoring plots")
    r.add_argument("--out", default="report.html", help="where to write it (default report.html)")
    r.add_argument("--json", action="store_true", help="also print a JSON summary (size, plots, rows)")
    r.set_defaults(fn=cmd_report)
