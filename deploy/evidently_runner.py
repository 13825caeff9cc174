"""Evidently's data-drift test on a scenario's events, windowed per slice (the baseline of
``driftctl bench detect``).

Runs in its own virtualenv (Evidently pins pandas < 3 and pulls a web stack we don't
want in the project's environment), so this file imports only the standard library,
pandas and Evidently, and talks to the bench through files::

    python deploy/evidently_runner.py --events scenario.jsonl --out result.json \
        --numeric amount,latency_ms --categorical device --window 500

For each slice, in event-time order: the reference is the slice's first ``window``
events, and each following full window of ``window`` events is tested against it with
Evidently's data-drift test (Evidently 0.7 API, ``Report(metrics).run(current, reference)``
with the per-column ``ValueDrift`` metrics ``DataDriftPreset`` is built of, or ``--preset`` for
the preset itself: same tests, same p-values, twice the plotting time). The default tests:
K-S for numeric columns of up to 1000 rows, chi-square for categorical, Z-test for binary,
each flagging at p < 0.05; rows with a null value are dropped by the tests. Besides the features it tests two derived columns: ``label`` (label drift) and
``error`` (1 when the thresholded prediction disagrees with the label: performance drift).

The result lists every (slice, column, window) the test flagged, with the window's last
event index and event_time, so the bench can score it like our own alerts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: off (no network here)
os.environ.setdefault("ITERATIVE_DO_NOT_TRACK", "1")

DERIVED = ("label", "error")


def read_slices(path: str, numeric: list[str], categorical: list[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = defaultdict(list)
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            ev = json.loads(line)
            feats, cats = ev.get("features") or {}, ev.get("categorical") or {}
            row = {"event_time": int(ev["event_time"])}
            for f in numeric:
                v = feats.get(f)
                row[f] = float("nan") if v is None else float(v)
            for c in categorical:
                row[c] = cats.get(c)
            label, pred = ev.get("label"), ev.get("prediction")
            row["label"] = None if label is None else str(int(label))
            row["error"] = None if label is None or pred is None else str(int((pred >= 0.5) != (int(label) == 1)))
            rows[ev["slice"]].append(row)
    for r in rows.values():
        r.sort(key=lambda x: x["event_time"])
    return rows


def drifted_columns(snapshot) -> dict[str, dict]:
    """column -> {drift, score, method, threshold} from an Evidently 0.7 snapshot."""
    out = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config") or {}
        if not cfg.get("type", "").endswith("ValueDrift"):
            continue
        method, threshold, value = str(cfg.get("method", "")), float(cfg.get("threshold", 0.05)), m["value"]
        score = float(value if not isinstance(value, dict) else value.get("value", 0.0))
        # p-value tests flag below the threshold; distance tests (wasserstein, jensen-shannon...) at or above
        drift = score < threshold if "p_value" in method else score >= threshold
        out[cfg["column"]] = {"drift": bool(drift), "score": score, "method": method, "threshold": threshold}
    return out


def _slice_flags(job: tuple) -> tuple[list[dict], int, int, dict[str, str]]:
    """Flags of one slice's windows (a process-pool task)."""
    slice_, rows, numeric, categorical, window, use_preset = job
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    columns = [*numeric, *categorical, *DERIVED]
    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=[*categorical, *DERIVED])

    def metrics():
        # The preset is DriftedColumnsCount plus one ValueDrift per column with the same default
        # tests; the per-column metrics alone give identical p-values and skip half the rendering.
        return [DataDriftPreset()] if use_preset else [ValueDrift(column=c) for c in columns]

    df = pd.DataFrame(rows, columns=["event_time", *columns])
    flags, tests, windows, methods = [], 0, 0, {}
    if len(df) < 2 * window:
        return flags, tests, windows, methods
    ref = Dataset.from_pandas(df.iloc[:window][columns].reset_index(drop=True), data_definition=definition)
    for k in range(1, len(df) // window):
        cur_df = df.iloc[k * window : (k + 1) * window]
        cur = Dataset.from_pandas(cur_df[columns].reset_index(drop=True), data_definition=definition)
        result = drifted_columns(Report(metrics()).run(cur, ref))
        windows += 1
        for col, r in result.items():
            tests += 1
            methods.setdefault(col, r["method"])
            if r["drift"]:
                flags.append(
                    {
                        "slice": slice_,
                        "column": col,
                        "window": k,
                        "start_index": k * window,
                        "end_index": (k + 1) * window - 1,
                        "start_event_time": int(cur_df["event_time"].iloc[0]),
                        "end_event_time": int(cur_df["event_time"].iloc[-1]),
                        "score": r["score"],
                        "method": r["method"],
                        "threshold": r["threshold"],
                    }
                )
    return flags, tests, windows, methods


def run(events: str, numeric: list[str], categorical: list[str], window: int, jobs: int = 1,
        use_preset: bool = False) -> dict:  # fmt: skip
    import pandas as pd
    from evidently import __version__

    started = time.monotonic()
    slices = read_slices(events, numeric, categorical)
    work = [(s, rows, numeric, categorical, window, use_preset) for s, rows in sorted(slices.items())]
    if jobs > 1 and len(work) > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_slice_flags, work, chunksize=1)
    else:
        results = [_slice_flags(w) for w in work]
    flags, tests, windows, methods = [], 0, 0, {}
    for f, t, w, m in results:
        flags += f
        tests += t
        windows += w
        methods.update(m)
    return {
        "evidently_version": __version__,
        "pandas_version": pd.__version__,
        "metrics": "DataDriftPreset" if use_preset else "ValueDrift per column (DataDriftPreset's tests)",
        "window": window,
        "slices": len(slices),
        "windows": windows,
        "tests": tests,
        "methods": methods,
        "flags": flags,
        "seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", required=True, help="scenario JSON lines")
    p.add_argument("--out", required=True, help="where to write the JSON result")
    p.add_argument("--numeric", default="", help="comma-separated numeric features")
    p.add_argument("--categorical", default="", help="comma-separated categorical features")
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--jobs", type=int, default=1, help="processes (slices are independent)")
    p.add_argument("--preset", action="store_true", help="run DataDriftPreset itself (same tests, slower)")
    a = p.parse_args(argv)
    numeric = [x for x in a.numeric.split(",") if x]
    categorical = [x for x in a.categorical.split(",") if x]
    result = run(a.events, numeric, categorical, a.window, a.jobs, a.preset)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, a.out)
    print(f"evidently {result['evidently_version']}: {result['windows']} windows, {len(result['flags'])} flags "
          f"in {result['seconds']:.1f}s", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
