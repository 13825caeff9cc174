"""``driftctl demo``: the whole story on synthetic labelled events, end to end, with a summary.

A concept change in one slice -> a PERFORMANCE_DRIFT alert (streams) -> a RetrainRequest for
that slice's adapter (router) -> a job that bootstraps the model (first job, no ``driftctl
train``) and updates only the adapter: a CANDIDATE (retrain worker) -> on live traffic, scored by
an application through a serving handle, the rollout service shadows it, gives it a canary share
and promotes it; then the change reverts and the watch rolls it back (:mod:`deploy.demo_release`)
-> alert, request, result and every stage joined in ClickHouse (sink).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from deploy.demo_release import release_settings, run_release, show_serving
from deploy.demo_story import RetrainStory
from deploy.queries import get_query
from runtime.kafka import end_offsets, iter_topic, read_topic, value_decoder, wait_caught_up
from runtime.progress import progress
from schemas.codec import ALERT, RETRAIN_REQUEST, RETRAIN_RESULT
from schemas.settings import Settings

log = logging.getLogger(__name__)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _since(started: float) -> int:
    return int(time.monotonic() - started)


def collect_alerts(
    settings: Settings,
    start: dict[int, int],
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    on_wait: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Alerts written after ``start`` offsets, until ``until(alerts)`` holds or timeout;
    ``on_wait(alerts)`` runs on every poll (a progress display)."""
    alerts: list[dict[str, Any]] = []

    def waiting() -> bool:
        if on_wait is not None:
            on_wait(alerts)
        return False

    records = iter_topic(settings, settings.topics.alerts, start=start, decode=value_decoder(ALERT.decode),
                         timeout=timeout, stop=waiting, on_error=log.warning)  # fmt: skip
    with closing(records):
        for alert in records:
            alerts.append(alert)
            if until(alerts):
                break
    return alerts


def collect_retraining(
    settings: Settings,
    start: dict[str, dict[int, int]],
    model: str,
    slices: set[str],
    timeout: float,
    on_wait: Callable[[list[dict[str, Any]]], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(requests, results) of ``model`` written after ``start``: until the slices have results and
    every request (escalations included) has its result and a few quiet seconds passed, or timeout.
    ``on_wait(results)`` runs on every poll (a progress display)."""
    t = settings.topics
    results: list[dict[str, Any]] = []
    last_change = time.monotonic()

    def requests() -> list[dict[str, Any]]:
        got = read_topic(settings, t.retrain_requests, start=start["requests"],
                         decode=value_decoder(RETRAIN_REQUEST.decode), timeout=30, on_error=log.warning)  # fmt: skip
        return [r for r in got if r["model"] == model]

    def settled() -> bool:
        nonlocal last_change
        if on_wait is not None:
            on_wait(results)
        if not slices <= {s for r in results for s in r["slices"]}:
            return False
        if time.monotonic() - last_change < 3:  # the router escalates a rejection within a second
            return False
        asked = {r["request_id"] for r in requests()}
        last_change = time.monotonic()  # not settled: look at the requests again after a quiet while
        return bool(asked) and asked <= {r["request_id"] for r in results}

    records = iter_topic(settings, t.retrain_results, start=start["results"],
                         decode=value_decoder(RETRAIN_RESULT.decode), timeout=timeout, stop=settled,
                         on_error=log.warning)  # fmt: skip
    with closing(records):
        for result in records:
            if result["model"] == model:
                results.append(result)
                last_change = time.monotonic()
    return requests(), results


def _short(request_id: str) -> str:
    return request_id[:8]


def show_request(req: dict[str, Any]) -> None:
    ranges = ", ".join(f"p{r['partition']}:{r['start_offset']}-{r['end_offset']}" for r in req["snapshot"]["ranges"])
    _say(
        f"  REQUEST {_short(req['request_id'])} {req['tier']} {', '.join(req['modules'])} for "
        f"{req['model']}/{','.join(req['slices'])}: {len(req['alert_ids'])} alert(s), priority {req['priority']}; "
        f"snapshot {req['snapshot']['topic']} {ranges} (labelled events)"
    )


def show_result(res: dict[str, Any]) -> None:
    share = res["params_updated"] / res["params_total"] if res["params_total"] else 0.0
    version = f"{res['parent_version']} -> {res['new_version']}" if res["new_version"] else f"kept {res['parent_version']}"
    _say(
        f"  RESULT  {_short(res['request_id'])} {res['decision']} ({version}): {res['tier']} updated "
        f"{', '.join(res['modules_updated']) or '-'}, {res['params_updated']} of {res['params_total']} parameters "
        f"({share:.1%}) in {res['train_seconds']:.1f}s; {res['metric_name']} on {','.join(res['slices'])} "
        f"{res['metric_before']:.4f} -> {res['metric_after']:.4f}, other slices' largest regression "
        f"{res['other_slices_max_regression']:.4f}"
    )
    _say(f"          {res['reason']}")


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def run_demo(settings: Settings, events_per_slice: int = 3000, timeout: float = 180.0) -> int:
    from consumers.store import open_clickhouse, query
    from deploy.broker import LocalBroker
    from deploy.services import SERVICES, start_services
    from runtime.topics import ensure_topics

    t0 = time.monotonic()
    # a model name of its own per run: fresh detector state, registry entry and router cooldowns
    model = f"demo-model-{time.strftime('%H%M%S')}"
    story = RetrainStory(
        model=model, slices=("eu-west", "us-east", "ap-south"), drifted=("eu-west",),
        events_per_slice=events_per_slice, onset=events_per_slice // 2,
    )  # fmt: skip
    target = story.drifted[0]
    # a short coalesce window: the demo produces everything at once, no need to wait for more data
    settings = settings.model_copy(update={"router_coalesce_seconds": min(settings.router_coalesce_seconds, 3.0)})
    settings = release_settings(settings)
    _say(f"[1/7] Kafka broker at {settings.kafka_bootstrap}")
    broker = LocalBroker(settings)
    started_broker = not broker.status().get("running")
    broker.up()
    ensure_topics(settings)
    alert_start = end_offsets(settings, settings.topics.alerts)
    models_start = end_offsets(settings, settings.topics.models)
    retrain_start = {
        "requests": end_offsets(settings, settings.topics.retrain_requests),
        "results": end_offsets(settings, settings.topics.retrain_results),
    }

    _say(
        "[2/7] starting services: streams (river detectors per slice x feature), router (alerts -> retrain "
        "requests), retrain (triage, selective torch updates, registry), rollout (shadow, canary, watch, "
        "rollback), sink (ClickHouse)"
    )
    services = start_services(settings, SERVICES, log_dir=settings.run_dir / "logs")
    code = 1
    try:
        _say(
            f"[3/7] producing {story.total_events} labelled events of {model}: {len(story.slices)} slices x "
            f"{len(story.features)} numeric features + device, with the deployed model's prediction; from its "
            f"event {story.onset} the concept of {target} turns (same inputs, other labels), the rest stay stable"
        )
        from deploy.produce import produce_events

        began = time.monotonic()
        with progress(settings, total=story.total_events, desc="produce", unit="ev") as bar:
            produced = produce_events(settings, story.events(), bar.to)
        _say(f"  produced {produced} events in {time.monotonic() - began:.1f}s")

        _say(f"[4/7] waiting (up to {timeout:.0f}s) for the drift alert on {settings.topics.alerts}")

        def found(alerts: list[dict[str, Any]]) -> bool:
            return any(a["model"] == model and a["slice"] == target for a in alerts)

        began = time.monotonic()
        with progress(settings, total=int(timeout), desc="waiting for alerts", unit="s") as bar:

            def show_alerts(alerts: list[dict[str, Any]]) -> None:
                bar.note(alerts=sum(a["model"] == model for a in alerts))
                bar.to(_since(began))

            alerts = collect_alerts(settings, alert_start, found, timeout, on_wait=show_alerts)
        alerts = [a for a in alerts if a["model"] == model]
        _say(f"  {len(alerts)} alert(s) of {model} after {time.monotonic() - began:.1f}s")
        for a in alerts:
            _say(
                f"  ALERT {a['alert_type']} {a['severity']} {a['model']}/{a['slice']}/{a['feature']} "
                f"by {a['detector']}: {'error rate' if a['alert_type'] == 'PERFORMANCE_DRIFT' else 'mean'} "
                f"{a['reference']['mean']:.2f} -> {a['current']['mean']:.2f}, "
                f"offsets {a['partition']}:{a['first_offset']}-{a['last_offset']}"
            )
        if not found(alerts):
            _say(f"  no alert on {target} within {timeout:.0f}s; see {settings.run_dir}/logs")
            return 1

        _say(f"[5/7] retraining (waiting up to {timeout:.0f}s): the router coalesces alerts "
             f"({settings.router_coalesce_seconds:g}s), the worker bootstraps the model (first job) and updates "
             "only what the drift touched")  # fmt: skip
        began = time.monotonic()
        with progress(settings, total=int(timeout), desc="waiting for retraining", unit="s") as bar:

            def show_results(results: list[dict[str, Any]]) -> None:
                bar.note(results=len(results), last=results[-1]["decision"] if results else "-")
                bar.to(_since(began))

            requests, results = collect_retraining(settings, retrain_start, model, {target}, timeout, show_results)
        _say(f"  {len(requests)} request(s), {len(results)} result(s) after {time.monotonic() - began:.1f}s")
        by_id = {r["request_id"]: r for r in results}
        for req in requests:
            show_request(req)
            if req["request_id"] in by_id:
                show_result(by_id[req["request_id"]])
        if not results or {target} - {s for r in results for s in r["slices"]}:
            _say(f"  no retrain result for {target} within {timeout:.0f}s; see {settings.run_dir}/logs")
            return 1
        candidate = next((r for r in results if r["decision"] == "CANDIDATE" and target in r["slices"]), None)
        if candidate is None:
            _say(f"  no CANDIDATE for {target} (the offline gate decided {[r['decision'] for r in results]}); "
                 "nothing to release")
            return 1
        _say(f"[6/7] releasing {candidate['new_version']} (waiting up to {timeout:.0f}s): the application keeps "
             f"serving live events through a ModelHandle while the rollout service shadows the candidate, gives it "
             f"{settings.rollout_canary_fraction:.0%} of {target}'s events, promotes it, and watches it")  # fmt: skip
        release = run_release(settings, story, models_start, timeout, candidate["new_version"])
        show_serving(release, story, candidate["new_version"])
        if release.outcome != "ROLLED_BACK":
            _say(f"  the rollout ended {release.outcome or 'undecided'} after {release.seconds:.0f}s "
                 f"(stages {release.stages}); see {settings.run_dir}/logs/rollout.log")
            return 1
        for topic in (settings.topics.alerts, settings.topics.retrain_requests, settings.topics.retrain_results,
                      settings.topics.models):
            if not wait_caught_up(settings, settings.sink_group, topic, timeout=60):
                _say(f"  the sink did not commit {topic} within 60s; see the sink log")
                return 1
        code = 0
    finally:
        services.stop()
        if code != 0 and started_broker:
            broker.down()

    _say("[7/7] ClickHouse: alerts, alert -> retrain request -> result joined, and the rollout's stages")
    from deploy.output import write_rows

    client = open_clickhouse(settings)
    cols, rows = query(
        client,
        "SELECT slice, feature, alert_type, severity, count() AS alerts FROM drift_alerts FINAL "
        f"WHERE model = '{model}' GROUP BY slice, feature, alert_type, severity ORDER BY slice, alert_type",
    )
    write_rows(cols, rows, "table", sys.stdout)
    print()
    cols, rows = query(
        client,
        "SELECT a.slice AS slice, groupUniqArray(a.alert_type) AS alerts, q.tier AS tier, "
        "any(res.modules_updated) AS modules_updated, any(res.params_updated) AS params_updated, "
        "any(res.params_total) AS params_total, round(any(res.metric_before), 4) AS before, "
        "round(any(res.metric_after), 4) AS after, any(res.decision) AS decision "
        "FROM (SELECT * FROM retrain_results FINAL) AS res "
        "INNER JOIN (SELECT * FROM retrain_requests FINAL) AS q ON q.request_id = res.request_id "
        "ARRAY JOIN q.alert_ids AS aid "
        "INNER JOIN (SELECT * FROM drift_alerts FINAL) AS a ON a.alert_id = aid "
        f"WHERE res.model = '{model}' GROUP BY a.slice, q.tier, res.request_id ORDER BY a.slice, q.tier",
    )
    write_rows(cols, rows, "table", sys.stdout)
    print()
    q = get_query("rollouts")
    cols, rows = query(client, q.sql, q.parameters())
    keep = ["updated_at", "version", "stage", "current_version", "canary_fraction", "statistic", "events",
            "candidate_loss", "incumbent_loss"]  # fmt: skip
    mine = [r for r in rows if r[cols.index("model")] == model]
    write_rows(keep, [tuple(_round(r[cols.index(c)]) for c in keep) for r in mine], "table", sys.stdout)
    _, stat_rows = query(client, f"SELECT count() FROM drift_stats FINAL WHERE model = '{model}'")
    _say(f"  drift_stats rows: {stat_rows[0][0]}")
    _say(f"summary: 1 drift alert -> 1 request -> {candidate['new_version']} CANDIDATE (ADAPTER, "
         f"{candidate['params_updated']} of {candidate['params_total']} parameters) -> "
         f"{' -> '.join(release.stages[1:] if release.stages[:1] == ['CANDIDATE'] else release.stages)}; "
         f"{release.live_events} live events served through the handle in {release.seconds:.0f}s (the change "
         f"reverted after {release.reverted_at} per slice)")
    if started_broker:
        broker.down()
        _say("  (broker stopped: the demo started it; `driftctl up` keeps one running)")
    _say(f"demo done in {time.monotonic() - t0:.1f}s; try: driftctl query --named rollouts, or driftctl report")
    return code
