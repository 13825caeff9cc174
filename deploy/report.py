"""``driftctl report``: one self-contained HTML file with the monitoring plots.

The data comes from the ready queries (``deploy/clickhouse/queries``), read through
:func:`consumers.query_server.open_reader`, so the report works while the services run,
after they stopped, and against a ClickHouse server alike. Plots are plotly figures;
plotly.js is inlined once in the page, so the file opens offline and fetches nothing.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from deploy.queries import get_query

SEVERITY_COLORS = {"LOW": "#f2c14e", "MEDIUM": "#f78154", "HIGH": "#b3001b"}
SEVERITIES = ("LOW", "MEDIUM", "HIGH")
TIER_ORDER = {"ADAPTER": 0, "MODULE": 1, "FULL": 2}
DECISION_ORDER = {"PROMOTED": 0, "REJECTED": 1, "ROLLED_BACK": 2, "PENDING": 3}
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
    kw.setdefault("legend", {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0})
    fig.update_layout(meta=title, height=height, template="plotly_white", **kw)
    return fig


def _slice_label(model: str, slice_: str, models: set[str]) -> str:
    return slice_ if len(models) <= 1 else f"{model}/{slice_}"


ALERT_SYMBOLS = {"DATA_DRIFT": "x", "DATA_QUALITY": "diamond", "LABEL_DRIFT": "triangle-up",
                 "PERFORMANCE_DRIFT": "circle"}  # fmt: skip
# distinct colours for the slices that alerted (plotly's default cycle repeats after 10)
SLICE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b",
                "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")  # fmt: skip
QUIET_COLOR = "#c3c8cf"


def drift_timeline_figure(timeline: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> go.Figure:
    """Top: per slice, the highest drift score over its features per minute. Bottom: the alerts.

    Slices with alerts get their own colours, the quiet ones share a thin grey. A score of 0
    means no reference yet (the first interval, or right after an alert): it is left out
    rather than drawn at an arbitrary floor. The alerts sit on their own row per slice
    (colour = severity, symbol = type): their statistics are on detector-specific scales
    and mean nothing on the drift-score axis.
    """
    models = {r["model"] for r in timeline} | {a["model"] for a in alerts}
    series: dict[str, dict[datetime, tuple[float, str]]] = defaultdict(dict)
    for r in timeline:
        label = _slice_label(r["model"], r["slice"], models)
        score = float(r["score_max"])
        best = series[label].get(r["minute"])
        if best is None or score > best[0]:
            series[label][r["minute"]] = (score, r["feature"])
    alerted = sorted({_slice_label(a["model"], a["slice"], models) for a in alerts})
    colors = {label: SLICE_COLORS[i % len(SLICE_COLORS)] for i, label in enumerate(alerted)}
    rows = alerted + sorted(set(series) - set(alerted))  # legend: the slices that alerted first
    strip_rows = alerted or rows[:1]
    strip_height = 60 + 26 * len(strip_rows)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[360, strip_height])  # fmt: skip
    quiet_legend = False
    for label in rows:
        points = sorted(series.get(label, {}).items())
        if not points:
            continue
        quiet = label not in colors
        xs = [t for t, _ in points]
        ys = [s if s > 0 else None for _, (s, _) in points]
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", connectgaps=False, name="quiet slices" if quiet else label,
            legendgroup="quiet" if quiet else label, showlegend=not quiet or not quiet_legend,
            line={"color": QUIET_COLOR if quiet else colors[label], "width": 1 if quiet else 2.2},
            marker={"size": 3 if quiet else 5}, opacity=0.8 if quiet else 1.0,
            customdata=[[label, f] for _, (_, f) in points],
            hovertemplate="%{customdata[0]} %{x}<br>score %{y:.3g} (%{customdata[1]})<extra></extra>",
        ), row=1, col=1)  # fmt: skip
        quiet_legend = quiet_legend or quiet
    for severity in SEVERITIES:
        marks = [a for a in alerts if a["severity"] == severity]
        if not marks:
            continue
        text = [f"{a['alert_type']} {severity}<br>{_slice_label(a['model'], a['slice'], models)} / "
                f"{a['feature'] or '(performance)'}<br>{a['detector']} statistic {a['statistic']:.3g} "
                f"(threshold {a['threshold']:.3g})<br>window {_fmt(a['window_start'])} .. {_fmt(a['window_end'])}"
                f"<br>{a['alert_id']}" for a in marks]  # fmt: skip
        fig.add_trace(go.Scatter(
            x=[a["window_end"] for a in marks], y=[_slice_label(a["model"], a["slice"], models) for a in marks],
            mode="markers", name=f"alert {severity}", showlegend=False, text=text, hoverinfo="text",
            marker={"symbol": [ALERT_SYMBOLS.get(a["alert_type"], "star") for a in marks], "size": 13,
                    "color": SEVERITY_COLORS[severity], "line": {"width": 1, "color": "#333"}},
        ), row=2, col=1)  # fmt: skip
    for severity in [s for s in SEVERITIES if any(a["severity"] == s for a in alerts)]:  # legend: colours
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"{severity} alert", legendgroup="severities",
            marker={"symbol": "square", "size": 11, "color": SEVERITY_COLORS[severity]}, hoverinfo="skip",
        ), row=2, col=1)  # fmt: skip
    for alert_type in sorted({a["alert_type"] for a in alerts}):  # legend entries for the symbols
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=alert_type.lower().replace("_", " "), legendgroup="types",
            marker={"symbol": ALERT_SYMBOLS.get(alert_type, "star"), "size": 11, "color": "#fff",
                    "line": {"width": 1.5, "color": "#333"}}, hoverinfo="skip",
        ), row=2, col=1)  # fmt: skip
    positive = [v for points in series.values() for v, _ in points.values() if v > 0]
    wide = bool(positive) and max(positive) / min(positive) > 30  # log only where it is needed to see both ends
    fig.update_yaxes(type="log" if wide else "linear", title_text="drift score" + (" (log)" if wide else ""),
                     rangemode="tozero", row=1, col=1)  # fmt: skip
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(reversed(strip_rows)),
                     title_text="alerts", showgrid=True, row=2, col=1)  # fmt: skip
    fig.update_xaxes(title_text="event time (UTC)", row=2, col=1)
    return _layout(fig, "Drift score per slice over event time (max over features), with the alerts",
                   height=420 + strip_height + 40)


def _count_axis(top: float, title: str) -> dict[str, Any]:
    """A y axis for counts: whole-number ticks (no 0.5 alerts) from zero."""
    axis: dict[str, Any] = {"title": title, "rangemode": "tozero", "tickformat": "d"}
    if top <= 10:
        axis["dtick"] = 1
    return axis


def alerts_by_type_figure(rows: list[dict[str, Any]]) -> go.Figure:
    types = sorted({r["alert_type"] for r in rows})
    fig = go.Figure()
    for severity in SEVERITIES:
        counts = {r["alert_type"]: r["alerts"] for r in rows if r["severity"] == severity}
        if not counts:
            continue
        fig.add_trace(go.Bar(x=types, y=[counts.get(t, 0) for t in types], name=severity,
                             marker_color=SEVERITY_COLORS[severity], text=[counts.get(t) or "" for t in types],
                             textposition="inside", hovertemplate="%{x} " + severity + ": %{y}<extra></extra>"))  # fmt: skip
    totals = {t: sum(r["alerts"] for r in rows if r["alert_type"] == t) for t in types}
    for t in types:
        fig.add_annotation(x=t, y=totals[t], text=f"<b>{totals[t]}</b>", showarrow=False, yshift=10)
    return _layout(fig, "Alerts by type and severity (distinct alert_id)", height=380, barmode="stack",
                   yaxis=_count_axis(max(totals.values(), default=0), "alerts"))  # fmt: skip


def alerts_by_hour_figure(rows: list[dict[str, Any]]) -> go.Figure:
    models = {r["model"] for r in rows}
    labels = sorted({_slice_label(r["model"], r["slice"], models) for r in rows}, reverse=True)
    hours = sorted({r["hour"] for r in rows})
    grid = {(_slice_label(r["model"], r["slice"], models), r["hour"]): r for r in rows}
    z = [[grid[s, h]["alerts"] if (s, h) in grid else 0 for h in hours] for s in labels]
    features = [[", ".join(f or "(performance)" for f in grid[s, h]["features"]) if (s, h) in grid else ""
                 for h in hours] for s in labels]  # fmt: skip
    x = [h.strftime("%Y-%m-%d %H:00") for h in hours]  # categories: one hour would get sub-ms ticks on a time axis
    top = max((v for row in z for v in row), default=1)
    fig = go.Figure(go.Heatmap(
        x=x, y=labels, z=z, zmin=0, zmax=max(top, 1), colorscale="OrRd", xgap=2, ygap=2,
        text=[[str(v) if v else "" for v in row] for row in z], texttemplate="%{text}", customdata=features,
        colorbar={"title": "alerts", "tickformat": "d", **({"dtick": 1} if top <= 10 else {})},
        hovertemplate="%{y} %{x}<br>%{z} alerts on %{customdata}<extra></extra>",
    ))  # fmt: skip
    return _layout(fig, "Alerts per slice per hour (rollup alerts_hourly)", height=max(260, 90 + 32 * len(labels)),
                   xaxis={"type": "category", "title": "event-time hour (UTC)"})  # fmt: skip


def compute_saved_figure(rows: list[dict[str, Any]]) -> go.Figure:
    labels = [f"{r['model']} {r['tier']} ({r['jobs']} jobs)" for r in rows]
    estimated = any(r["full_cost_basis"] != "measured FULL jobs" for r in rows)
    full_name = "full retrains (" + ("estimated: scaled by parameters" if estimated else "measured") + ")"
    fig = go.Figure([
        go.Bar(x=labels, y=[r["train_seconds"] for r in rows], name="selective retraining: train seconds",
               marker_color="#2a9d8f", text=[f"{r['train_seconds']:.3g} s" for r in rows], textposition="outside",
               hovertemplate="%{x}<br>%{y:.3g} s trained<extra></extra>"),
        go.Bar(x=labels, y=[r["full_retrain_seconds"] for r in rows], name=full_name,
               marker_color="#8d99ae", customdata=[r["full_cost_basis"] for r in rows],
               text=[f"{r['full_retrain_seconds']:.3g} s" for r in rows], textposition="outside",
               hovertemplate="%{x}<br>%{y:.3g} s as full retrains (%{customdata})<extra></extra>"),
        go.Bar(x=labels, y=[r["wasted_seconds"] for r in rows], name="wasted: rejected or rolled-back jobs",
               marker_color="#e76f51", hovertemplate="%{x}<br>%{y:.3g} s wasted<extra></extra>"),
        go.Bar(x=labels, y=[r["avoided_seconds"] for r in rows], name="avoided: SKIPPED by triage (estimated)",
               marker_color="#e9c46a", customdata=[r["skipped"] for r in rows],
               hovertemplate="%{x}<br>%{y:.3g} s avoided by %{customdata} skipped requests<extra></extra>"),
    ])  # fmt: skip
    top = max((r["full_retrain_seconds"] for r in rows), default=0.0)
    for label, r in zip(labels, rows):
        fig.add_annotation(x=label, y=top * 1.18 or 1, showarrow=False,
                           text=f"<b>saved {100 * r['saved_share']:.1f}%</b> ({r['saved_seconds']:.3g} s)")  # fmt: skip
    return _layout(fig, "Compute: selective retraining against full retrains", height=400, barmode="group",
                   yaxis={"title": "training seconds (sum over jobs)", "rangemode": "tozero",
                          "range": [0, top * 1.3 or 1]})  # fmt: skip


def retrain_outcomes_figure(links: list[dict[str, Any]]) -> go.Figure:
    requests: dict[str, dict[str, Any]] = {}
    for r in links:
        requests.setdefault(r["request_id"], r)
    tiers = sorted({r["requested_tier"] for r in requests.values()}, key=lambda t: (TIER_ORDER.get(t, 9), t))
    decisions = sorted({r["decision"] for r in requests.values()}, key=lambda d: (DECISION_ORDER.get(d, 9), d))
    colors = {"PROMOTED": "#2a9d8f", "REJECTED": "#e76f51", "ROLLED_BACK": "#9b2226", "PENDING": "#adb5bd"}
    fig = go.Figure()
    for d in decisions:
        counts = [sum(1 for r in requests.values() if r["requested_tier"] == t and r["decision"] == d) for t in tiers]
        fig.add_trace(go.Bar(x=tiers, y=counts, name=d, marker_color=colors.get(d, "#6c757d"),
                             text=[c or "" for c in counts], textposition="inside",
                             hovertemplate="%{x}: %{y} " + d + "<extra></extra>"))  # fmt: skip
    top = max((sum(1 for r in requests.values() if r["requested_tier"] == t) for t in tiers), default=0)
    return _layout(fig, "Retraining requests by requested tier and outcome", height=340, barmode="stack",
                   yaxis=_count_axis(top, "requests"), xaxis={"title": "requested tier"})  # fmt: skip


def _wrap(text: str, width: int = 60) -> str:
    """Plotly axis labels do not wrap by themselves: break at spaces with <br>."""
    lines, line = [], ""
    for word in html.escape(text, quote=False).split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join(lines + [line])


def dead_letters_figure(rows: list[dict[str, Any]]) -> go.Figure:
    rows = sorted(rows, key=lambda r: r["messages"])
    topics = {r["source_topic"] for r in rows}
    labels = []
    for r in rows:  # one bar per row: a label must not repeat or plotly merges the bars
        label = _wrap(f"{r['error_type']}: {r['reason']}" + (f" ({r['source_topic']})" if len(topics) > 1 else ""))
        while label in labels:
            label += " "
        labels.append(label)
    lines = sum(label.count("<br>") + 1 for label in labels)
    fig = go.Figure(go.Bar(
        y=labels, x=[r["messages"] for r in rows], orientation="h", marker_color="#6d597a",
        text=[r["messages"] for r in rows], textposition="outside",
        customdata=[r["source_topic"] for r in rows], hovertemplate="%{x} messages from %{customdata}<extra></extra>",
    ))  # fmt: skip
    top = max((r["messages"] for r in rows), default=0)
    return _layout(fig, "Dead letters by reason", height=max(240, 90 + 26 * lines + 14 * len(rows)),
                   xaxis={**_count_axis(top, "messages"), "range": [0, top * 1.12 or 1]},
                   yaxis={"automargin": True}, margin={"l": 20, "r": 30, "t": 40, "b": 50})  # fmt: skip


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
section.panel h2{font-size:16px;margin:0 0 8px}section.panel h3{font-size:14px;margin:18px 0 6px;color:#333}
section.panel p.note{font-size:13px;color:#555;margin:4px 0 8px}
section.empty{border-left:4px solid #adb5bd}section.empty p{font-size:14px}
div.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12.5px;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{background:#f1f3f5;white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.PROMOTED{color:#1e7a70;font-weight:600}td.REJECTED{color:#c0502f}td.ROLLED_BACK{color:#9b2226;font-weight:600}
td.PENDING{color:#6c757d;font-style:italic}td.time{white-space:nowrap}
td.col-reason,td.col-example_reason,td.col-from_alerts{min-width:190px}td.col-modules{min-width:120px}
td.col-example{min-width:190px;word-break:break-all}
td.col-alert_id,td.col-request_id,td.col-request{font-family:ui-monospace,monospace;font-size:11.5px}
details{margin-top:10px}summary{cursor:pointer;font-size:13px;color:#1d3557}
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


def _printable(text: str) -> str:
    """Control bytes of an undecodable message shown as escapes (\\x00), not as boxes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def html_table(rows: list[dict[str, Any]], columns: list[str], max_rows: int = 50,
               headers: dict[str, str] | None = None, classes: tuple[str, ...] = ()) -> str:  # fmt: skip
    """A table of some columns of the rows; ``classes``: columns whose value is also the cell's CSS class."""
    headers = headers or {}
    head = "".join(f"<th>{html.escape(headers.get(c, c))}</th>" for c in columns)
    body = []
    for r in rows[:max_rows]:
        cells = []
        for c in columns:
            v = r.get(c)
            names = [f"col-{c}"]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                names.append("num")
            elif isinstance(v, datetime):
                names.append("time")
            if c in classes and isinstance(v, str) and v.replace("_", "").isalnum():
                names.append(v)
            cls = f' class="{" ".join(names)}"'
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="note">{len(rows) - max_rows} more rows not shown</p>' if len(rows) > max_rows else ""
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{more}'


def _plot(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})  # fmt: skip


def _panel(key: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f'<section class="panel" data-panel="{key}"><h2>{html.escape(title)}</h2>{note_html}{body}</section>'


def _empty(key: str, title: str, message: str) -> str:
    return (f'<section class="panel empty" data-panel="{key}" data-empty="true"><h2>{html.escape(title)}</h2>'
            f"<p>{html.escape(message)}</p></section>")  # fmt: skip


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


def render(data: ReportData) -> str:
    """The whole report page as one HTML string."""
    timeline, alerts = data["drift-timeline"], data["alerts"]
    by_type, by_hour = data["alerts-by-type"], data["alerts-by-hour"]
    drifting, links = data["drifting-now"], data["alert-retraining"]
    saved, dead = data["compute-saved"], data["dead-letters"]
    requests = retrain_requests(links)
    total_alerts = sum(r["alerts"] for r in by_type)
    promoted = sum(r["promoted"] for r in saved)
    jobs = sum(r["jobs"] for r in saved)
    cards = [
        (len(drifting), "slice x feature drifting now"),
        (total_alerts, "alerts (distinct)"),
        (len(requests), "retrain requests"),
        (f"{promoted} / {jobs}", "retrain jobs promoted"),
        (sum(r["messages"] for r in dead), "dead letters"),
    ]
    parts = ['<div class="cards">' + "".join(f"<div class=card><b>{html.escape(str(n))}</b><span>{html.escape(t)}"
                                              "</span></div>" for n, t in cards) + "</div>"]  # fmt: skip
    if drifting:
        parts.append(_panel("drifting-now", "Drifting now", html_table(drifting, [
            "model", "slice", "feature", "since", "first_alert", "last_alert", "alerts", "alert_types",
            "max_severity", "latest_score"], headers={"since": "since (est.)"}),
            "(slice, feature) pairs whose latest alerts are within the last hour of data time (query drifting-now). "
            "since: where the change began by the detectors' estimate (the start of the changed part of the first "
            "alert's window); first_alert: when it was first confirmed; empty feature: performance (error rate); "
            "latest_score: the newest drift score, empty where no stats are kept (labels, performance, categories)."))  # fmt: skip
    else:
        parts.append(_empty("drifting-now", "Drifting now", "Nothing is drifting: no alert in the last hour of data."))
    if timeline or alerts:
        parts.append(_panel("drift-timeline", "Drift score per slice", _plot(
            drift_timeline_figure(timeline, alerts), "plot-drift-timeline"),
            "Top: the highest drift score over a slice's numeric features per stats interval (event time; "
            "slices with alerts in colour, the others grey). The score is the interval mean's distance from the "
            "feature's first 1,000 values, in their standard deviations (about 0.03 is noise; it stays up while "
            "the slice stays drifted). Bottom: every alert on "
            "its slice's row at the event time it was confirmed; colour = severity, symbol = type. "
            "Hover for the feature, detector, statistic and alert id."))  # fmt: skip
    else:
        parts.append(_empty("drift-timeline", "Drift score per slice", "No drift statistics stored yet."))
    if by_type:
        latest = html_table(alerts, ["window_end", "alert_type", "severity", "model", "slice", "feature", "detector",
                                     "statistic", "threshold", "window_start", "alert_id"], max_rows=200,
                            headers={"window_end": "confirmed at"})  # fmt: skip
        parts.append(_panel("alerts-by-type", "Alerts by type and severity",
                            _plot(alerts_by_type_figure(by_type), "plot-alerts-by-type")
                            + f"<details><summary>the latest alerts ({len(alerts)})</summary>{latest}</details>"))  # fmt: skip
        parts.append(_panel("alerts-by-hour", "Alerts per slice per hour",
                            _plot(alerts_by_hour_figure(by_hour), "plot-alerts-by-hour")))  # fmt: skip
    else:
        parts.append(_empty("alerts-by-type", "Alerts by type and severity", "No alerts yet."))
    if links or saved:
        body = ""
        if saved:
            body += "<h3>Compute: selective retraining against full retrains</h3>"
            body += _plot(compute_saved_figure(saved), "plot-compute-saved")
            body += html_table(saved, ["model", "tier", "jobs", "promoted", "rejected", "rolled_back", "skipped",
                                       "share_params_updated", "train_seconds", "promoted_seconds", "wasted_seconds",
                                       "avoided_seconds", "full_retrain_seconds",
                                       "saved_seconds", "saved_share", "full_cost_basis"])  # fmt: skip
        if links:
            body += "<h3>Retraining requests by tier and outcome</h3>"
            body += _plot(retrain_outcomes_figure(links), "plot-retrain-outcomes")
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
        parts.append(_panel("retraining", "Retraining outcomes and compute saved", body,
                            "Queries compute-saved and alert-retraining. A rejected ADAPTER request is escalated to "
                            "MODULE, so one drift can show as two requests. The full-retrain cost is measured from "
                            "FULL jobs when there are any, else estimated as each job's seconds scaled by "
                            "params_total / params_updated (full_cost_basis says which)."))  # fmt: skip
    else:
        parts.append(_empty("retraining", "Retraining outcomes and compute saved",
                            "No retraining yet: no retrain request or result has been stored."))  # fmt: skip
    if dead:
        shown = [{**r, "example": _printable(r["example"] or "")} for r in dead]
        parts.append(_panel("dead-letters", "Dead letters by reason", _plot(dead_letters_figure(dead),
                            "plot-dead-letters") + html_table(shown, ["source_topic", "error_type", "reason",
                            "messages", "first_failed", "last_failed", "example_reason", "example"]),
                            "Query dead-letters: one row per cause (message-specific details such as the first "
                            "bytes or the offending value are cut from the reason; example_reason and example "
                            "show the first message in full)."))  # fmt: skip
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
