"""``driftctl report``: one self-contained HTML file with the monitoring plots.

The data comes from the ready queries (``deploy/clickhouse/queries``), read through
:func:`consumers.query_server.open_reader`, so the report works while the services run,
after they stopped, and against a ClickHouse server alike. Plots are plotly figures;
plotly.js is inlined once in the page, so the file opens offline and fetches nothing.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from deploy.queries import get_query

SEVERITY_COLORS = {"LOW": "#f2c14e", "MEDIUM": "#f78154", "HIGH": "#b3001b"}
SEVERITIES = ("LOW", "MEDIUM", "HIGH")
SCORE_FLOOR = 1e-2  # log axis: scores of exactly 0 are drawn at the floor
QUERIES = (
    "drifting-now", "drift-timeline", "alerts", "alerts-by-type", "alerts-by-hour",
    "alert-retraining", "compute-saved", "dead-letters",
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


# --------------------------------------------------------------------------------------
# Figures (pure: rows in, plotly figure out)
# --------------------------------------------------------------------------------------


def _layout(fig: go.Figure, title: str, height: int = 420, **kw: Any) -> go.Figure:
    """Shared look; the title goes into the SVG's accessible name (the panel heading shows it)."""
    kw.setdefault("margin", {"l": 60, "r": 20, "t": 40, "b": 50})
    fig.update_layout(
        meta=title, height=height, template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0}, **kw,
    )  # fmt: skip
    return fig


def _slice_label(model: str, slice_: str, models: set[str]) -> str:
    return slice_ if len(models) <= 1 else f"{model}/{slice_}"


def drift_timeline_figure(timeline: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> go.Figure:
    """Per slice, the highest drift score over its features per minute; alerts as markers on it."""
    models = {r["model"] for r in timeline} | {a["model"] for a in alerts}
    series: dict[str, dict[datetime, tuple[float, str]]] = defaultdict(dict)
    for r in timeline:
        label = _slice_label(r["model"], r["slice"], models)
        score = max(float(r["score_max"]), SCORE_FLOOR)
        best = series[label].get(r["minute"])
        if best is None or score > best[0]:
            series[label][r["minute"]] = (score, r["feature"])
    fig = go.Figure()
    for label in sorted(series):
        points = sorted(series[label].items())
        fig.add_trace(go.Scatter(
            x=[t for t, _ in points], y=[s for _, (s, _) in points], mode="lines", name=label,
            customdata=[f for _, (_, f) in points], hovertemplate="%{x}<br>score %{y:.3g} (%{customdata})",
        ))  # fmt: skip
    for severity in SEVERITIES:
        marks = [a for a in alerts if a["severity"] == severity]
        if not marks:
            continue
        xs, ys, text = [], [], []
        for a in marks:
            label = _slice_label(a["model"], a["slice"], models)
            minute = a["window_end"].replace(second=0, microsecond=0)
            on_line = series.get(label, {}).get(minute)
            xs.append(a["window_end"])
            ys.append(on_line[0] if on_line else max(float(a["statistic"]), SCORE_FLOOR))
            text.append(f"{a['alert_type']} {severity}<br>{label} / {a['feature'] or '(performance)'}"
                        f"<br>{a['detector']} stat {a['statistic']:.3g}<br>{a['alert_id']}")  # fmt: skip
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name=f"alert {severity}", text=text, hoverinfo="text",
            marker={"symbol": "x", "size": 12, "color": SEVERITY_COLORS[severity], "line": {"width": 1}},
        ))  # fmt: skip
    return _layout(fig, "Drift score per slice over event time (max over features), alerts marked",
                   yaxis={"type": "log", "title": "drift score"}, xaxis={"title": "event time (UTC)"})  # fmt: skip


def alerts_by_type_figure(rows: list[dict[str, Any]]) -> go.Figure:
    types = sorted({r["alert_type"] for r in rows})
    fig = go.Figure()
    for severity in SEVERITIES:
        counts = {r["alert_type"]: r["alerts"] for r in rows if r["severity"] == severity}
        fig.add_trace(go.Bar(x=types, y=[counts.get(t, 0) for t in types], name=severity,
                             marker_color=SEVERITY_COLORS[severity]))  # fmt: skip
    return _layout(fig, "Alerts by type and severity (distinct alert_id)", barmode="stack",
                   yaxis={"title": "alerts"})  # fmt: skip


def alerts_by_hour_figure(rows: list[dict[str, Any]]) -> go.Figure:
    models = {r["model"] for r in rows}
    labels = sorted({_slice_label(r["model"], r["slice"], models) for r in rows})
    hours = sorted({r["hour"] for r in rows})
    grid = {(_slice_label(r["model"], r["slice"], models), r["hour"]): r["alerts"] for r in rows}
    z = [[grid.get((s, h), 0) for h in hours] for s in labels]
    x = [h.strftime("%Y-%m-%d %H:00") for h in hours]  # categories: one hour would get sub-ms ticks on a time axis
    fig = go.Figure(go.Heatmap(x=x, y=labels, z=z, colorscale="OrRd", colorbar={"title": "alerts"},
                               hovertemplate="%{y} %{x}<br>%{z} alerts<extra></extra>"))  # fmt: skip
    return _layout(fig, "Alerts per slice per hour (rollup alerts_hourly)", height=max(260, 60 + 40 * len(labels)),
                   xaxis={"type": "category", "title": "event-time hour (UTC)"})  # fmt: skip


def compute_saved_figure(rows: list[dict[str, Any]]) -> go.Figure:
    labels = [f"{r['model']} {r['tier']} ({r['jobs']} jobs)" for r in rows]
    fig = go.Figure([
        go.Bar(x=labels, y=[r["train_seconds"] for r in rows], name="selective: train seconds",
               marker_color="#2a9d8f"),
        go.Bar(x=labels, y=[r["full_retrain_seconds"] for r in rows], name="full retrains (estimate)",
               marker_color="#8d99ae", customdata=[r["full_cost_basis"] for r in rows],
               hovertemplate="%{y:.3g} s (%{customdata})"),
    ])  # fmt: skip
    for label, r in zip(labels, rows):
        fig.add_annotation(x=label, y=math.log10(max(r["full_retrain_seconds"], 1e-9)), text=f"saved {100 * r['saved_share']:.1f}%",
                           showarrow=False, yshift=12)  # fmt: skip
    return _layout(fig, "Compute: selective retraining against full retrains", barmode="group",
                   yaxis={"type": "log", "title": "seconds"})  # fmt: skip


def retrain_outcomes_figure(links: list[dict[str, Any]]) -> go.Figure:
    requests: dict[str, dict[str, Any]] = {}
    for r in links:
        requests.setdefault(r["request_id"], r)
    tiers = sorted({r["requested_tier"] for r in requests.values()})
    decisions = sorted({r["decision"] for r in requests.values()})
    colors = {"PROMOTED": "#2a9d8f", "REJECTED": "#e76f51", "ROLLED_BACK": "#9b2226", "PENDING": "#adb5bd"}
    fig = go.Figure()
    for d in decisions:
        fig.add_trace(go.Bar(
            x=tiers, y=[sum(1 for r in requests.values() if r["requested_tier"] == t and r["decision"] == d)
                        for t in tiers], name=d, marker_color=colors.get(d, "#6c757d"),
        ))  # fmt: skip
    return _layout(fig, "Retraining requests by tier and outcome", barmode="stack", yaxis={"title": "requests"})


def dead_letters_figure(rows: list[dict[str, Any]]) -> go.Figure:
    rows = sorted(rows, key=lambda r: r["messages"])
    labels = [f"{r['error_type']}: {r['reason'][:70]}" for r in rows]
    fig = go.Figure(go.Bar(
        y=labels, x=[r["messages"] for r in rows], orientation="h", marker_color="#6d597a",
        customdata=[r["source_topic"] for r in rows], hovertemplate="%{x} messages from %{customdata}<extra></extra>",
    ))  # fmt: skip
    return _layout(fig, "Dead letters by reason", height=max(260, 80 + 36 * len(rows)),
                   xaxis={"title": "messages"}, margin={"l": 380, "r": 20, "t": 50, "b": 50})  # fmt: skip


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2433}
header{background:#1d3557;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85;font-size:13px}main{padding:18px 28px;max-width:1400px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:#fff;border-radius:8px;padding:12px 18px;min-width:150px;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:24px}.card span{font-size:12px;color:#555}
section.panel{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:16px;box-shadow:0 1px 2px #0002}
section.panel h2{font-size:16px;margin:0 0 8px}section.panel p.note{font-size:13px;color:#555;margin:4px 0 8px}
section.empty{border-left:4px solid #adb5bd}section.empty p{font-size:14px}
table{border-collapse:collapse;font-size:12.5px;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e5e7eb}
th{background:#f1f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def html_table(rows: list[dict[str, Any]], columns: list[str], max_rows: int = 50) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows[:max_rows]:
        cells = []
        for c in columns:
            v = r.get(c)
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="note">{len(rows) - max_rows} more rows not shown</p>' if len(rows) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _plot(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})  # fmt: skip


def _panel(key: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f'<section class="panel" data-panel="{key}"><h2>{html.escape(title)}</h2>{note_html}{body}</section>'


def _empty(key: str, title: str, message: str) -> str:
    return (f'<section class="panel empty" data-panel="{key}" data-empty="true"><h2>{html.escape(title)}</h2>'
            f"<p>{html.escape(message)}</p></section>")  # fmt: skip


def render(data: ReportData) -> str:
    """The whole report page as one HTML string."""
    timeline, alerts = data["drift-timeline"], data["alerts"]
    by_type, by_hour = data["alerts-by-type"], data["alerts-by-hour"]
    drifting, links = data["drifting-now"], data["alert-retraining"]
    saved, dead = data["compute-saved"], data["dead-letters"]
    for r in links:  # no result yet: the result columns hold ClickHouse's defaults, show them empty
        if r["decision"] == "PENDING":
            r.update(metric_name=None, metric_before=None, metric_after=None, new_version=None)
    total_alerts = sum(r["alerts"] for r in by_type)
    promoted = sum(r["promoted"] for r in saved)
    cards = [
        (len(drifting), "slice x feature drifting now"),
        (total_alerts, "alerts (distinct)"),
        (len({r["request_id"] for r in links}), "retrain requests"),
        (promoted, "retrains promoted"),
        (sum(r["messages"] for r in dead), "dead letters"),
    ]
    parts = ['<div class="cards">' + "".join(f"<div class=card><b>{n}</b><span>{html.escape(t)}</span></div>"
                                              for n, t in cards) + "</div>"]  # fmt: skip
    if drifting:
        parts.append(_panel("drifting-now", "Drifting now", html_table(drifting, [
            "model", "slice", "feature", "since", "last_alert", "alerts", "alert_types", "max_severity",
            "latest_score"]), "Alerts within the last hour of data time (query drifting-now)."))  # fmt: skip
    else:
        parts.append(_empty("drifting-now", "Drifting now", "Nothing is drifting: no alert in the last hour of data."))
    if timeline or alerts:
        parts.append(_panel("drift-timeline", "Drift score per slice", _plot(
            drift_timeline_figure(timeline, alerts), "plot-drift-timeline"),
            "Highest drift score over a slice's features per event-time minute (log scale); "
            "crosses are alerts, coloured by severity. Hover for the feature and the alert id."))  # fmt: skip
    else:
        parts.append(_empty("drift-timeline", "Drift score per slice", "No drift statistics stored yet."))
    if by_type:
        parts.append(_panel("alerts-by-type", "Alerts by type and severity",
                            _plot(alerts_by_type_figure(by_type), "plot-alerts-by-type")))  # fmt: skip
        parts.append(_panel("alerts-by-hour", "Alerts per slice per hour",
                            _plot(alerts_by_hour_figure(by_hour), "plot-alerts-by-hour")))  # fmt: skip
    else:
        parts.append(_empty("alerts-by-type", "Alerts by type and severity", "No alerts yet."))
    if links or saved:
        body = ""
        if saved:
            body += _plot(compute_saved_figure(saved), "plot-compute-saved")
            body += html_table(saved, ["model", "tier", "jobs", "promoted", "rejected", "rolled_back",
                                       "share_params_updated", "train_seconds", "full_retrain_seconds",
                                       "saved_seconds", "saved_share", "full_cost_basis"])  # fmt: skip
        if links:
            body += _plot(retrain_outcomes_figure(links), "plot-retrain-outcomes")
            body += html_table(links, ["alert_id", "alert_type", "slice", "feature", "request_id",
                                       "requested_tier", "modules", "decision", "metric_name", "metric_before",
                                       "metric_after", "new_version"])  # fmt: skip
        parts.append(_panel("retraining", "Retraining outcomes and compute saved", body,
                            "Which alerts led to which retraining (query alert-retraining) and the compute "
                            "selective updates saved against full retrains (query compute-saved)."))  # fmt: skip
    else:
        parts.append(_empty("retraining", "Retraining outcomes and compute saved",
                            "No retraining yet: no retrain request or result has been stored."))  # fmt: skip
    if dead:
        parts.append(_panel("dead-letters", "Dead letters by reason", _plot(dead_letters_figure(dead),
                            "plot-dead-letters") + html_table(dead, ["source_topic", "error_type", "reason",
                            "messages", "first_failed", "last_failed", "example"])))  # fmt: skip
    else:
        parts.append(_empty("dead-letters", "Dead letters by reason", "No dead letters: every message was processed."))
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
