"""``driftctl report``: one self-contained HTML file with the monitoring plots.

The data comes from the ready queries (``deploy/clickhouse/queries``), read through
:func:`consumers.query_server.open_reader`, so the report works while the services run,
after they stopped, and against a ClickHouse server alike. Plots are plotly figures
(:mod:`deploy.report_figures`), the page pieces are in :mod:`deploy.report_html`; plotly.js
is inlined once in the page, so the file opens offline and fetches nothing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plotly.offline import get_plotlyjs

from deploy.queries import get_query
from deploy.report_figures import (
    alerts_by_hour_figure,
    alerts_by_type_figure,
    compute_saved_figure,
    dead_letters_figure,
    drift_timeline_figure,
    retrain_outcomes_figure,
    rollout_figure,
)
from deploy.report_html import CSS, empty, html_table, panel, plot, printable

QUERIES = (
    "drifting-now", "drift-timeline", "alerts", "alerts-by-type", "alerts-by-hour",
    "alert-retraining", "compute-saved", "dead-letters", "rollouts", "version-performance",
)  # fmt: skip


@dataclass
class Table:
    columns: list[str]
    rows: list[tuple]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]


@dataclass
class ReportData:
    source: str
    tables: dict[str, Table]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __getitem__(self, name: str) -> list[dict[str, Any]]:
        return self.tables[name].dicts()


def gather(reader: Any, limit_alerts: int = 500) -> ReportData:
    """Run the report's ready queries with a reader (see consumers.query_server.open_reader)."""
    tables = {}
    for name in QUERIES:
        q = get_query(name)
        overrides = {"limit": str(limit_alerts)} if name == "alerts" else None
        cols, rows = reader.query(q.sql, q.parameters(overrides))
        tables[name] = Table(cols, rows)
    return ReportData(reader.describe(), tables)



def retrain_requests(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alert-retraining rows (one per alert x request) as one row per request, its alerts listed."""
    requests: dict[str, dict[str, Any]] = {}
    for r in links:
        req = requests.setdefault(r["request_id"], {**r, "alerts": []})
        what = f"{r['alert_type'] or 'alert'} {r['slice'] or ''}/{r['feature'] or '(performance)'}"
        if r["alert_time"] is not None and r["alert_type"]:
            what += f" @ {r['alert_time']:%H:%M:%S}"
        req["alerts"].append(what if r["alert_type"] else f"{r['alert_id']} (not stored)")
    out = []
    for req in requests.values():
        pending = req["decision"] == "PENDING"
        change = ""
        if not pending and req["metric_name"]:
            change = f"{req['metric_name']} {req['metric_before']:.4g} -> {req['metric_after']:.4g}"
        out.append({
            "requested_at": req["requested_at"], "request_id": req["request_id"], "model": req["model"],
            "request": req["request_id"][:8] + ("…" if len(req["request_id"]) > 8 else ""),
            "tier": req["requested_tier"], "modules": req["modules"], "from_alerts": "; ".join(req["alerts"]),
            "decision": req["decision"], "metric": change, "new_version": None if pending else req["new_version"] or None,
            "reason": None if pending else req["reason"],
        })  # fmt: skip
    return out


def rollouts_panel(rollouts: list[dict[str, Any]], versions: list[dict[str, Any]]) -> str:
    """Per model: the stages over time and the live losses (figure), each change, each version."""
    if not rollouts:
        return empty("rollouts", "Rollouts", "No rollout yet: no version has been staged (table model_rollouts).")
    body = plot(rollout_figure(rollouts), "plot-rollouts")
    body += "<h3>Stage changes</h3>" + html_table(rollouts, [
        "updated_at", "model", "version", "stage", "previous_version", "current_version", "canary_fraction",
        "statistic", "events", "candidate_loss", "incumbent_loss", "reason"], max_rows=200,
        headers={"updated_at": "at", "previous_version": "incumbent", "current_version": "current after"},
        classes=("stage",))  # fmt: skip
    if versions:
        body += "<h3>Performance per version</h3>" + html_table(versions, [
            "model", "version", "incumbent", "tier", "metric_name", "offline_before", "offline_after", "last_stage",
            "live_events", "live_loss", "incumbent_live_loss", "live_loss_delta"],
            headers={"offline_before": "offline before", "offline_after": "offline after",
                     "live_loss_delta": "live delta"}, classes=("last_stage",))  # fmt: skip
    return panel("rollouts", "Rollouts: stages and live loss per version", body,
                 "Queries rollouts and version-performance. A version that passed the offline gate is a CANDIDATE; "
                 "in SHADOW it scores new labelled events of its slices beside the incumbent, in CANARY it serves a "
                 "share of them (by hash of event_id); the sequential test's statistic and the paired events decide "
                 "PROMOTED or REJECTED, and the watch after promotion may roll it back. Losses: mean per-event live "
                 "loss of the version and of its incumbent on the same events.")


def render(data: ReportData) -> str:
    """The whole report page as one HTML string."""
    timeline, alerts = data["drift-timeline"], data["alerts"]
    by_type, by_hour = data["alerts-by-type"], data["alerts-by-hour"]
    drifting, links = data["drifting-now"], data["alert-retraining"]
    saved, dead, rollouts = data["compute-saved"], data["dead-letters"], data["rollouts"]
    requests = retrain_requests(links)
    total_alerts = sum(r["alerts"] for r in by_type)
    promoted = sum(r["promoted"] for r in saved)
    jobs = sum(r["jobs"] for r in saved)
    cards = [
        (len(drifting), "slice x feature drifting now"),
        (total_alerts, "alerts (distinct)"),
        (len(requests), "retrain requests"),
        (f"{promoted} / {jobs}", "retrain jobs promoted"),
        (f"{sum(r['stage'] == 'PROMOTED' for r in rollouts)} / {sum(r['stage'] == 'ROLLED_BACK' for r in rollouts)}",
         "rollouts promoted / rolled back"),
        (sum(r["messages"] for r in dead), "dead letters"),
    ]
    parts = ['<div class="cards">' + "".join(f"<div class=card><b>{html.escape(str(n))}</b><span>{html.escape(t)}"
                                              "</span></div>" for n, t in cards) + "</div>"]  # fmt: skip
    if drifting:
        parts.append(panel("drifting-now", "Drifting now", html_table(drifting, [
            "model", "slice", "feature", "since", "first_alert", "last_alert", "alerts", "alert_types",
            "max_severity", "latest_score"], headers={"since": "since (est.)"}),
            "(slice, feature) pairs whose latest alerts are within the last hour of data time (query drifting-now). "
            "since: where the change began by the detectors' estimate (the start of the changed part of the first "
            "alert's window); first_alert: when it was first confirmed; empty feature: performance (error rate); "
            "latest_score: the newest drift score, empty where no stats are kept (labels, performance, categories)."))  # fmt: skip
    else:
        parts.append(empty("drifting-now", "Drifting now", "Nothing is drifting: no alert in the last hour of data."))
    if timeline or alerts:
        parts.append(panel("drift-timeline", "Drift score per slice", plot(
            drift_timeline_figure(timeline, alerts), "plot-drift-timeline"),
            "Top: the highest drift score over a slice's numeric features per stats interval (event time; "
            "slices with alerts in colour, the others grey). The score is the interval mean's distance from the "
            "feature's first 1,000 values, in their standard deviations (about 0.03 is noise; it stays up while "
            "the slice stays drifted). Bottom: every alert on "
            "its slice's row at the event time it was confirmed; colour = severity, symbol = type. "
            "Hover for the feature, detector, statistic and alert id."))  # fmt: skip
    else:
        parts.append(empty("drift-timeline", "Drift score per slice", "No drift statistics stored yet."))
    if by_type:
        latest = html_table(alerts, ["window_end", "alert_type", "severity", "model", "slice", "feature", "detector",
                                     "statistic", "threshold", "window_start", "alert_id"], max_rows=200,
                            headers={"window_end": "confirmed at"})  # fmt: skip
        parts.append(panel("alerts-by-type", "Alerts by type and severity",
                            plot(alerts_by_type_figure(by_type), "plot-alerts-by-type")
                            + f"<details><summary>the latest alerts ({len(alerts)})</summary>{latest}</details>"))  # fmt: skip
        parts.append(panel("alerts-by-hour", "Alerts per slice per hour",
                            plot(alerts_by_hour_figure(by_hour), "plot-alerts-by-hour")))  # fmt: skip
    else:
        parts.append(empty("alerts-by-type", "Alerts by type and severity", "No alerts yet."))
    if links or saved:
        body = ""
        if saved:
            body += "<h3>Compute: selective retraining against full retrains</h3>"
            body += plot(compute_saved_figure(saved), "plot-compute-saved")
            body += html_table(saved, ["model", "tier", "jobs", "promoted", "rejected", "rolled_back", "skipped",
                                       "share_params_updated", "train_seconds", "promoted_seconds", "wasted_seconds",
                                       "avoided_seconds", "full_retrain_seconds",
                                       "saved_seconds", "saved_share", "full_cost_basis"])  # fmt: skip
        if links:
            body += "<h3>Retraining requests by tier and outcome</h3>"
            body += plot(retrain_outcomes_figure(links), "plot-retrain-outcomes")
            body += "<h3>Which alerts led to which retraining, with what result</h3>"
            metrics = {r["metric_name"] for r in links if r["decision"] != "PENDING" and r["metric_name"]}
            one = metrics.pop() if len(metrics) == 1 else None
            if one:  # one metric throughout: name it in the header, keep the cells short
                for r in requests:
                    r["metric"] = r["metric"].removeprefix(one + " ")
            body += html_table(requests, ["requested_at", "tier", "modules", "from_alerts", "decision", "metric",
                                          "new_version", "reason", "request"], max_rows=200,
                               headers={"from_alerts": "from alerts (@ event time)",
                                        "request": "request id", "new_version": "version",
                                        "metric": f"{one or 'metric'} before -> after"},
                               classes=("decision",))  # fmt: skip
        parts.append(panel("retraining", "Retraining outcomes and compute saved", body,
                            "Queries compute-saved and alert-retraining. A rejected ADAPTER request is escalated to "
                            "MODULE, so one drift can show as two requests. The full-retrain cost is measured from "
                            "FULL jobs when there are any, else estimated as each job's seconds scaled by "
                            "params_total / params_updated (full_cost_basis says which)."))  # fmt: skip
    else:
        parts.append(empty("retraining", "Retraining outcomes and compute saved",
                            "No retraining yet: no retrain request or result has been stored."))  # fmt: skip
    parts.append(rollouts_panel(data["rollouts"], data["version-performance"]))
    if dead:
        shown = [{**r, "example": printable(r["example"] or "")} for r in dead]
        parts.append(panel("dead-letters", "Dead letters by reason", plot(dead_letters_figure(dead),
                            "plot-dead-letters") + html_table(shown, ["source_topic", "error_type", "reason",
                            "messages", "first_failed", "last_failed", "example_reason", "example"]),
                            "Query dead-letters: one row per cause (message-specific details such as the first "
                            "bytes or the offending value are cut from the reason; example_reason and example "
                            "show the first message in full)."))  # fmt: skip
    else:
        parts.append(empty("dead-letters", "Dead letters by reason", "No dead letters: every message was processed."))
    generated = data.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>driftwatch report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>driftwatch monitoring report</h1><p>generated {generated} from {html.escape(data.source)}</p></header>
<main>{''.join(parts)}</main>
</body></html>
"""


def write_report(reader: Any, out: Path) -> dict[str, Any]:
    """Gather, render and write atomically; returns what was written (for the CLI)."""
    data = gather(reader)
    page = render(data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return {
        "path": str(out),
        "bytes": out.stat().st_size,
        "plots": page.count('class="plotly-graph-div"'),
        "source": data.source,
        "rows": {name: len(t.rows) for name, t in data.tables.items()},
    }
