"""``driftctl bench detect``: detection delay, misses, false alarms and throughput, vs Evidently.

One run:

1. builds a suite of public scenarios (:func:`build_suite`; river's Hyperplane world and a
   river model per slice, numpy shifts, fixed seeds): many slices, most stable, and a few
   drifts of every kind in :data:`deploy.scenarios.KINDS`, each on its own slice;
2. produces them to throw-away topics (a unique prefix, app id and sink group per run) and
   writes the same events as JSON lines;
3. starts the real services (streams worker + ClickHouse sink) and lets the one worker
   drain the topic; the rate is read from the worker group's committed offsets, first
   commit to the commit covering the last event (start-up excluded and reported apart);
4. reads every alert from the alerts topic, stops the services, deletes the topics;
5. runs Evidently's data-drift test on the same JSON lines, windowed per slice, in its own
   virtualenv (:mod:`deploy.evidently_runner`);
6. scores both with the same pure function (:func:`score_alerts`) and prints them side by side.

Scoring (both systems, same terms):

- an alert *detects* a planned drift when slice, feature and alert type match and its
  ``window_end_event_time`` is at or after the onset; the *delay* is the number of events of
  that slice from the onset to the window end (event-time order). Later matching alerts are
  repeats. An alert on the drifted (slice, feature) after the onset but of another type is a
  *wrong-type* detection (reported, not counted as detected). Alerts a drift's kind is
  allowed to cause elsewhere (``ExpectedAlert.side_effects``) are *collateral*.
- every other alert is a *false alarm*, including alerts on a drifted pair before its onset.
- *stable (slice, feature) events*: events x monitored channels (numeric and categorical
  features, the label, performance) over the pairs and stretches with no drift planned
  (a drifted pair counts up to its onset).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from deploy.bench_throughput import bench_settings, rate_from_commits
from deploy.scenarios import ALERT_FOR_KIND, KINDS, LABEL, Drift, ExpectedAlert, Scenario, to_json_line
from runtime.kafka import watch_commits

TARGET_MEDIAN_DELAY = 300  # events of the drifted slice
TARGET_FALSE_ALARMS_PER_MILLION = 1.0
TARGET_EVENTS_PER_SECOND = 20_000
EVIDENTLY_WINDOW = 500
EVIDENTLY_REQUIREMENTS = ("evidently==0.7.23", "pandas>=2.2,<3")  # 0.7 API; pandas 3 is untested by it
SUITE_SIZES = {  # Drift.size per kind in the suite (meaning per kind: deploy.scenarios)
    "mean": 1.0,  # +1 reference sd
    "scale": 2.0,  # sd x 2
    "category_mix": 3.0,  # odds of the rarest device x 3 (15% -> 35%)
    "error_rate": 3.0,  # the model's error rate x 3 (about 8% -> 24%)
    "label_shift": 3.0,  # odds of label 1 x 3 (50% -> 75%)
    "missing": 2.0,  # 20% of the values become null
    "out_of_range": 0.5,  # 5% of the values become -999
}
DEVICE_LEVELS = {"device": {"ios": 0.5, "android": 0.35, "web": 0.15}}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the suite
def build_suite(quick: bool = False, seed: int = 2026) -> Scenario:
    """The benchmark's scenario: one drift per drifted slice, ``reps`` drifts of every kind.

    Full: 48 slices x 8,000 events (21 drifted, 27 stable), onsets between events 2,500
    and 4,500 of their slice. Quick: 10 slices x 3,000 events, one drift per kind (onsets 1,000
    to 1,600).
    """
    if quick:
        n_slices, per_slice, reps, first_onset = 10, 3000, 1, 1000
    else:
        n_slices, per_slice, reps, first_onset = 48, 8000, 3, 2500
    slices = tuple(f"slice-{i:02d}" for i in range(n_slices))
    numeric = ("amount", "latency_ms")
    # drifted slices spread over the list (every other one first), stable ones in between
    order = list(slices[::2]) + list(slices[1::2])
    drifts: list[Drift] = []
    k = 0
    for rep in range(reps):
        for j, kind in enumerate(KINDS):
            slice_ = order[k]
            k += 1
            onset = first_onset + rep * 700 + j * 100
            if kind in ("mean", "scale", "missing", "out_of_range"):
                feature: str | None = numeric[(rep + j) % 2]
            elif kind == "category_mix":
                feature = "device"
            elif kind == "label_shift":
                feature = LABEL
            else:
                feature = None
            drifts.append(Drift(slice_, feature, onset, kind, SUITE_SIZES[kind]))
    return Scenario(
        model="bench-model",
        slices=slices,
        features=numeric,
        events_per_slice=per_slice,
        drifts=tuple(drifts),
        seed=seed,
        interval_ms=10,
        categorical=("device",),
        category_levels=DEVICE_LEVELS,
    )


def slice_times(scenario: Scenario) -> dict[str, list[int]]:
    return {s: scenario.slice_event_times(s).tolist() for s in scenario.slices}


# --------------------------------------------------------------------------- scoring (pure)
def stable_pair_events(
    expected: Sequence[ExpectedAlert], events_per_slice: Mapping[str, int], channels: Sequence[str | None]
) -> int:
    """Events x channels over (slice, channel) pairs with no drift planned; a drifted pair, or a
    pair a drift may affect as a side effect, counts up to its (earliest) onset."""
    limit: dict[tuple[str, str | None], int] = {}
    for e in expected:
        keys = [(e.slice, e.feature)] + [(e.slice, f) for _, f in e.side_effects]
        for key in keys:
            limit[key] = min(limit.get(key, e.onset_index), e.onset_index)
    total = 0
    for s, n in events_per_slice.items():
        for c in channels:
            total += min(n, limit.get((s, c), n))
    return total


def score_alerts(
    expected: Sequence[ExpectedAlert],
    alerts: Iterable[Mapping[str, Any]],
    times: Mapping[str, Sequence[int]],
    channels: Sequence[str | None],
) -> dict[str, Any]:
    """Score alerts against ground truth (see the module docstring for the rules).

    ``times``: each slice's event times, ascending (one per event of the slice);
    ``channels``: the monitored features per slice (None = performance).
    Alerts need ``slice``, ``feature``, ``alert_type``, ``window_end_event_time`` and
    optionally ``alert_id`` (duplicates by id are counted once).
    """
    seen_ids: set[str] = set()
    by_pair: dict[tuple[str, str | None], list[ExpectedAlert]] = defaultdict(list)
    for e in expected:
        by_pair[(e.slice, e.feature)].append(e)
    first: dict[int, int] = {}  # id(expected) -> slice index of its first matching alert
    wrong: dict[int, tuple[int, str]] = {}
    repeats = collateral = foreign = duplicates = 0
    false_alarms: list[dict[str, Any]] = []
    for a in alerts:
        aid = a.get("alert_id")
        if aid is not None:
            if aid in seen_ids:
                duplicates += 1
                continue
            seen_ids.add(aid)
        s, f, t = a["slice"], a.get("feature"), int(a["window_end_event_time"])
        if s not in times:
            foreign += 1
            continue
        idx = bisect.bisect_right(times[s], t) - 1  # the slice's last event at or before the window end
        started = [e for e in by_pair.get((s, f), ()) if e.onset_event_time <= t]
        match = [e for e in started if e.alert_type == a["alert_type"]]
        if match:
            e = min(match, key=lambda e: e.onset_index)
            if id(e) in first:
                repeats += 1
                first[id(e)] = min(first[id(e)], idx)
            else:
                first[id(e)] = idx
            continue
        if started:
            e = started[0]
            if id(e) not in wrong or idx < wrong[id(e)][0]:
                wrong[id(e)] = (idx, a["alert_type"])
            else:
                repeats += 1
            continue
        if any(
            e.slice == s and e.onset_event_time <= t and (a["alert_type"], f) in e.side_effects for e in expected
        ):
            collateral += 1
            continue
        false_alarms.append(
            {"slice": s, "feature": f, "alert_type": a["alert_type"], "index": idx, "window_end_event_time": t}
        )

    per_drift = []
    for e in expected:
        d = first.get(id(e))
        w = wrong.get(id(e))
        per_drift.append(
            {
                **e.as_dict(),
                "detected": d is not None,
                "delay": None if d is None else d - e.onset_index,
                "wrong_type": None if w is None or d is not None else {"delay": w[0] - e.onset_index, "alert_type": w[1]},
            }
        )
    kinds = {}
    for kind in dict.fromkeys([e.kind for e in expected]):
        rows = [r for r in per_drift if r["kind"] == kind]
        delays = sorted(r["delay"] for r in rows if r["detected"])
        kinds[kind] = {
            "alert_type": ALERT_FOR_KIND[kind],
            "drifts": len(rows),
            "detected": len(delays),
            "missed": len(rows) - len(delays),
            "wrong_type": sum(1 for r in rows if r["wrong_type"] is not None),
            "median_delay": statistics.median(delays) if delays else None,
            "max_delay": max(delays) if delays else None,
            "delays": delays,
        }
    stable = stable_pair_events(expected, {s: len(v) for s, v in times.items()}, channels)
    return {
        "kinds": kinds,
        "drifts": per_drift,
        "false_alarms": len(false_alarms),
        "false_alarms_per_million": len(false_alarms) / stable * 1e6 if stable else math.nan,
        "false_alarm_types": dict(Counter(fa["alert_type"] for fa in false_alarms)),
        "false_alarm_list": false_alarms[:50],
        "stable_pair_events": stable,
        "repeats": repeats,
        "collateral": collateral,
        "foreign": foreign,
        "duplicates": duplicates,
    }


def evidently_alerts(flags: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evidently's flagged (slice, column, window)s as alerts: features -> DATA_DRIFT,
    label -> LABEL_DRIFT, the error column -> PERFORMANCE_DRIFT (feature None)."""
    out = []
    for fl in flags:
        col = fl["column"]
        if col == "error":
            feature, kind = None, "PERFORMANCE_DRIFT"
        elif col == LABEL:
            feature, kind = LABEL, "LABEL_DRIFT"
        else:
            feature, kind = col, "DATA_DRIFT"
        out.append(
            {
                "alert_id": f"evidently/{fl['slice']}/{col}/{fl['window']}",
                "slice": fl["slice"],
                "feature": feature,
                "alert_type": kind,
                "window_end_event_time": fl["end_event_time"],
            }
        )
    return out


def check_targets(ours: Mapping[str, Any], throughput: Mapping[str, Any]) -> dict[str, bool]:
    kinds = ours["kinds"]
    eps = throughput.get("events_per_second")
    return {
        "every kind detected, median delay < 300": all(
            k["missed"] == 0 and k["median_delay"] is not None and k["median_delay"] < TARGET_MEDIAN_DELAY
            for k in kinds.values()
        ),
        "false alarms <= 1 per million": ours["false_alarms_per_million"] <= TARGET_FALSE_ALARMS_PER_MILLION,
        "throughput >= 20,000 events/s": bool(eps and eps >= TARGET_EVENTS_PER_SECOND),
    }


# --------------------------------------------------------------------------- report
def _fmt(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_report(result: Mapping[str, Any]) -> str:
    ours, evid = result["driftwatch"], result.get("evidently")
    sc = result["scenario"]
    lines = [
        (
            f"driftctl bench detect{' (quick)' if result['quick'] else ''}: {sc['slices']} slices x "
            f"{sc['events_per_slice']:,} events = {sc['events']:,} events, {sc['drifts']} drifts "
            f"({sc['drifts'] // len(ours['kinds'])} per kind) on their own slices, seed {sc['seed']}"
        ),
        (
            f"stable (slice, feature) events: {ours['stable_pair_events']:,} "
            f"(channels per slice: {', '.join(c or 'performance' for c in sc['channels'])})"
        ),
        (
            "delay = events of the drifted slice from the onset to the alert's window end; "
            "det = detected with the right type / drifts; wt = alerted with another type"
        ),
        "",
    ]
    ev_name = f"Evidently {evid['version']} ({evid['window']}-event windows)" if evid and evid.get("ok") else "Evidently"
    head = f"{'kind':<13} {'expected alert':<18}| {'driftwatch':^34} | {ev_name:^34}"
    sub = f"{'':<13} {'':<18}| {'det':>5} {'miss':>4} {'wt':>3} {'median':>8} {'max':>8}   | {'det':>5} {'miss':>4} {'wt':>3} {'median':>8} {'max':>8}"
    lines += [head, sub, "-" * len(sub)]
    for kind, k in ours["kinds"].items():
        row = (
            f"{kind:<13} {k['alert_type']:<18}| {k['detected']:>2}/{k['drifts']:<2} {k['missed']:>4} {k['wrong_type']:>3} "
            f"{_fmt(k['median_delay']):>8} {_fmt(k['max_delay']):>8}   |"
        )
        if evid and evid.get("ok"):
            e = evid["score"]["kinds"][kind]
            row += (
                f" {e['detected']:>2}/{e['drifts']:<2} {e['missed']:>4} {e['wrong_type']:>3} "
                f"{_fmt(e['median_delay']):>8} {_fmt(e['max_delay']):>8}"
            )
        else:
            row += "  (not run)"
        lines.append(row)
    lines.append("-" * len(sub))
    fa = f"{ours['false_alarms_per_million']:.2f} ({ours['false_alarms']} alarms"
    fa += (", " + ", ".join(f"{t} {n}" for t, n in sorted(ours["false_alarm_types"].items())) + ")") if ours[
        "false_alarms"
    ] else ")"
    line = f"{'false alarms per million stable (slice, feature) events':<56} driftwatch {fa}"
    if evid and evid.get("ok"):
        es = evid["score"]
        line += f" | Evidently {es['false_alarms_per_million']:.2f} ({es['false_alarms']} flags)"
    lines.append(line)
    lines.append(
        f"{'other alerts':<56} driftwatch: {ours['repeats']} repeats on drifted pairs, "
        f"{ours['collateral']} collateral, {ours['duplicates']} duplicates"
        + (
            f" | Evidently: {evid['score']['repeats']} repeats, {evid['score']['collateral']} collateral"
            if evid and evid.get("ok")
            else ""
        )
    )
    tp = result["throughput"]
    if tp.get("events_per_second"):
        lines.append(
            f"{'throughput, one worker with the sink running':<56} {tp['events_per_second']:,.0f} events/s "
            f"({tp['measured_events']:,} events in {tp['measured_seconds']:.1f}s after the first commit; "
            f"start-up {tp['startup_seconds']:.1f}s)"
        )
    else:
        lines.append(f"{'throughput':<56} not measured: the worker did not commit every event ({tp})")
    if evid and evid.get("ok"):
        lines.append(
            f"{'Evidently run':<56} {evid['windows']} windows x {len(evid['methods'])} columns in "
            f"{evid['seconds']:.1f}s; tests: " + ", ".join(f"{c} {m}" for c, m in evid["methods"].items())
        )
    elif evid:
        lines.append(f"{'Evidently':<56} not run: {evid.get('error')}")
    lines.append("")
    for name, ok in result["targets"].items():
        lines.append(f"target {name:<44} {'PASS' if ok else 'FAIL'}")
    lines.append(f"bench took {result['seconds']:.0f}s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- Evidently
def evidently_python(settings, log: TextIO | None = None) -> Path:
    """The interpreter of the Evidently virtualenv under the run dir, created on first use.

    Evidently 0.7 wants pandas < 3 and brings a web stack (litestar, uvicorn, plotly, nltk),
    so it does not go into the project's environment.
    """
    venv = Path(settings.run_dir).resolve() / "bench-evidently-venv"
    py = venv / "bin" / "python"
    marker = venv / ".requirements"
    wanted = "\n".join(EVIDENTLY_REQUIREMENTS)
    if py.exists() and marker.exists() and marker.read_text() == wanted:
        return py
    _say(f"  creating the Evidently virtualenv {venv} (first use; about a minute)")
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *EVIDENTLY_REQUIREMENTS],
        check=False,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(EVIDENTLY_REQUIREMENTS)} failed:\n{proc.stderr[-2000:]}")
    marker.write_text(wanted)
    return py


def run_evidently(settings, scenario: Scenario, events_file: Path, out_file: Path) -> dict[str, Any]:
    """Run deploy/evidently_runner.py in the Evidently virtualenv; its JSON result, or an error."""
    try:
        py = evidently_python(settings)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return {"ok": False, "error": f"no Evidently environment: {exc}"}
    runner = Path(__file__).resolve().parent / "evidently_runner.py"
    cmd = [
        str(py), str(runner), "--events", str(events_file), "--out", str(out_file),
        "--numeric", ",".join(scenario.features), "--categorical", ",".join(scenario.categorical),
        "--window", str(EVIDENTLY_WINDOW), "--jobs", str(max(1, os.cpu_count() or 1)),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(DO_NOT_TRACK="1", ITERATIVE_DO_NOT_TRACK="1")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0 or not out_file.exists():
        return {"ok": False, "error": f"evidently_runner exited {proc.returncode}: {proc.stderr[-2000:]}"}
    data = json.loads(out_file.read_text())
    return {
        "ok": True,
        "version": data["evidently_version"],
        "metrics": data.get("metrics"),
        "window": data["window"],
        "windows": data["windows"],
        "tests": data["tests"],
        "methods": data["methods"],
        "seconds": data["seconds"],
        "flags": data["flags"],
    }


# --------------------------------------------------------------------------- Kafka side
def _retrying(fn, *args, attempts: int = 20, wait: float = 0.5):
    """Offsets queries right after group creation can fail with NOT_COORDINATOR and the like."""
    from confluent_kafka import KafkaException

    for i in range(attempts):
        try:
            return fn(*args)
        except KafkaException:
            if i == attempts - 1:
                raise
            time.sleep(wait)


def _read_topic(settings, topic: str, decode, idle: float = 3.0, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every record of ``topic`` from the beginning up to its current end (then ``idle`` s quiet)."""
    from runtime.kafka import read_topic, value_decoder

    return read_topic(
        settings, topic, decode=value_decoder(decode), idle=idle, timeout=timeout,
        on_error=lambda err: _say(f"  {err}"),
    )  # fmt: skip


def _drain(settings, group, total: int) -> list[tuple[float, int]]:
    """(seconds, events committed by the worker group) until all are, with a progress line."""

    def show(n: int) -> None:
        sys.stderr.write(f"\r  worker committed {n:,}/{total:,}")
        sys.stderr.flush()

    def alive() -> bool:
        return group.alive().get("streams", True)

    samples = watch_commits(settings, settings.app_id, settings.topics.events, total, alive, on_progress=show)
    best = max((n for _, n in samples), default=0)
    if best >= total:
        sys.stderr.write("\n")
    elif not alive():
        _say("\n  the streams worker exited early; see its log")
    else:
        _say(f"\n  no progress for 180s; giving up at {best:,}/{total:,}")
    return samples


# --------------------------------------------------------------------------- entry point
def run_detect_bench(
    settings, out: TextIO = sys.stdout, quick: bool = False, *, evidently: bool = True, keep_files: bool = False
) -> dict[str, Any]:
    """Run the detection benchmark against the configured broker; print the table, return the numbers."""
    from deploy.broker import LOCAL_HOSTS, LocalBroker
    from deploy.produce import produce_events
    from deploy.services import start_services
    from runtime.kafka import end_offsets
    from runtime.topics import app_topics, delete_topics, ensure_topics
    from schemas.codec import ALERT, DEAD_LETTER

    t_start = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    run = bench_settings(settings, tag, app="bench-detect", sink=True)
    work = Path(settings.run_dir).resolve() / "bench" / tag
    work.mkdir(parents=True, exist_ok=True)
    scenario = build_suite(quick)
    expected = scenario.expected_alerts()
    _say(
        f"[1/5] scenario: {len(scenario.slices)} slices x {scenario.events_per_slice:,} events, "
        f"{len(expected)} drifts; generating (river Hyperplane + numpy, seed {scenario.seed})"
    )
    columns = scenario.columns()

    broker, started_broker = None, False
    host = settings.kafka_bootstrap.split(",")[0].rpartition(":")[0]
    if host in LOCAL_HOSTS:
        broker = LocalBroker(settings)
        if not broker.status().get("running"):
            _say(f"  starting the local broker at {settings.kafka_bootstrap}")
            broker.up()
            started_broker = True
    services = None
    events_file = work / "events.jsonl"
    try:
        ensure_topics(run)
        _say(f"[2/5] producing {scenario.total_events:,} events to {run.topics.events} (and {events_file.name})")
        with events_file.open("w") as fh:

            def tee():
                for ev in scenario.events(columns):
                    fh.write(to_json_line(ev))
                    yield ev

            produced = produce_events(run, tee())
        total = sum(_retrying(end_offsets, run, run.topics.events).values())
        _say("[3/5] one streams worker + the ClickHouse sink draining the topic")
        services = start_services(run, ("streams", "sink"), log_dir=work / "logs")
        samples = _drain(run, services, total)
        throughput = rate_from_commits(samples, total)
        alerts = _read_topic(run, run.topics.alerts, ALERT.decode)
        dead = _read_topic(run, run.topics.dlq, DEAD_LETTER.decode, idle=0.5)
        codes = services.stop()
        services = None
        _say(f"  {len(alerts)} alerts, {len(dead)} dead letters; services exited {codes}")
    finally:
        if services is not None:
            services.stop()
        try:
            delete_topics(run, run.topics.all() + app_topics(run))
        except Exception as exc:  # noqa: BLE001 - cleanup only
            _say(f"  could not delete the run's topics: {exc}")
        if started_broker and broker is not None:
            broker.down()

    times = slice_times(scenario)
    channels = scenario.channels()
    ours = score_alerts(expected, alerts, times, channels)
    evid: dict[str, Any] | None = None
    if evidently:
        _say(f"[4/5] Evidently's data-drift test per slice, {EVIDENTLY_WINDOW}-event windows")
        evid = run_evidently(settings, scenario, events_file, work / "evidently.json")
        if evid.get("ok"):
            evid["score"] = score_alerts(expected, evidently_alerts(evid.pop("flags")), times, channels)
        else:
            _say(f"  Evidently not run: {evid['error']}")
    else:
        _say("[4/5] Evidently skipped")
    _say("[5/5] scoring")
    result: dict[str, Any] = {
        "quick": quick,
        "tag": tag,
        "scenario": {
            "slices": len(scenario.slices),
            "events_per_slice": scenario.events_per_slice,
            "events": scenario.total_events,
            "produced": produced,
            "drifts": len(expected),
            "seed": scenario.seed,
            "channels": channels,
            "sizes": SUITE_SIZES,
        },
        "driftwatch": ours,
        "evidently": evid,
        "throughput": {**throughput, "dead_letters": len(dead), "exit_codes": codes},
        "targets": check_targets(ours, throughput),
    }
    result["seconds"] = time.monotonic() - t_start
    if not keep_files:
        events_file.unlink(missing_ok=True)
        shutil.rmtree(work / "clickhouse", ignore_errors=True)
    print(format_report(result), file=out, flush=True)
    return result
