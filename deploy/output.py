"""Query results for people and scripts: one writer the CLI, the demo and the benchmarks share."""

from __future__ import annotations

import csv
import json
from typing import IO, Any


def write_rows(cols: list[str], rows: list[tuple[Any, ...]], fmt: str, out: IO[str]) -> None:
    """``rows`` under ``cols`` as an aligned text table, a JSON list of objects, or CSV."""
    if fmt == "json":
        json.dump([dict(zip(cols, r)) for r in rows], out, default=str)
        out.write("\n")
    elif fmt == "csv":
        w = csv.writer(out)
        w.writerow(cols)
        w.writerows(rows)
    else:
        cells = [[str(c) for c in cols]] + [[str(v) for v in r] for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
        for n, row in enumerate(cells):
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")
            if n == 0:
                out.write("  ".join("-" * w for w in widths) + "\n")
