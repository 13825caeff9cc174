"""The report's figures: pure functions, query rows in, plotly figure out (no I/O, no HTML)."""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from deploy.report_html import fmt

SEVERITY_COLORS = {"LOW": "#f2c14e", "MEDIUM": "#f78154", "HIGH": "#b3001b"}
SEVERITIES = ("LOW", "MEDIUM", "HIGH")
TIER_ORDER = {"ADAPTER": 0, "MODULE": 1, "FULL": 2}
DECISION_ORDER = {"PROMOTED": 0, "REJECTED": 1, "ROLLED_BACK": 2, "PENDING": 3}


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
                f"(threshold {a['threshold']:.3g})<br>window {fmt(a['window_start'])} .. {fmt(a['window_end'])}"
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



STAGE_COLORS = {"CANDIDATE": "#adb5bd", "SHADOW": "#6c757d", "CANARY": "#f4a261", "PROMOTED": "#2a9d8f",
                "REJECTED": "#e76f51", "ROLLED_BACK": "#9b2226"}  # fmt: skip
STAGE_SYMBOLS = {"CANDIDATE": "circle-open", "SHADOW": "circle", "CANARY": "diamond", "PROMOTED": "star",
                 "REJECTED": "x", "ROLLED_BACK": "triangle-down"}  # fmt: skip


def rollout_figure(rollouts: list[dict[str, Any]]) -> go.Figure:
    """Top: per model version, its stage changes over time. Bottom: at each change that rests on
    live evidence, the live loss of the version (solid) and of its incumbent (dotted) on the
    same paired labelled events: the candidate line below the incumbent's means it does better."""
    models = {r["model"] for r in rollouts}

    def label(r: dict[str, Any]) -> str:
        return r["version"] if len(models) <= 1 else f"{r['model']} {r['version']}"

    rows = list(dict.fromkeys(label(r) for r in rollouts))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[60 + 40 * len(rows), 300])  # fmt: skip
    for stage, color in STAGE_COLORS.items():
        marks = [r for r in rollouts if r["stage"] == stage]
        if not marks:
            continue
        text = [f"{label(r)} {stage}" + (f" {100 * r['canary_fraction']:.0f}%" if stage == "CANARY" else "")
                + f"<br>vs {r['previous_version'] or '-'}, current {r['current_version'] or '-'}"
                + (f"<br>statistic {r['statistic']:.3g} on {r['events']} events" if r["statistic"] is not None else "")
                + f"<br>{html.escape(r['reason'])}" for r in marks]  # fmt: skip
        fig.add_trace(go.Scatter(
            x=[r["updated_at"] for r in marks], y=[label(r) for r in marks], mode="markers", name=stage.lower(),
            text=text, hoverinfo="text",
            marker={"symbol": STAGE_SYMBOLS[stage], "size": 14, "color": color, "line": {"width": 1, "color": "#333"}},
        ), row=1, col=1)  # fmt: skip
    for i, name in enumerate(rows):
        live = [r for r in rollouts if label(r) == name and r["candidate_loss"] is not None]
        if not live:
            continue
        color = SLICE_COLORS[i % len(SLICE_COLORS)]
        xs = [r["updated_at"] for r in live]
        fig.add_trace(go.Scatter(
            x=xs, y=[r["candidate_loss"] for r in live], mode="lines+markers", name=f"{name} live loss",
            line={"color": color, "width": 2.2}, customdata=[[r["stage"], r["events"]] for r in live],
            hovertemplate=name + " %{customdata[0]}: loss %{y:.4g} on %{customdata[1]} events<extra></extra>",
        ), row=2, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(
            x=xs, y=[r["incumbent_loss"] for r in live], mode="lines+markers",
            name=f"its incumbent ({live[-1]['previous_version'] or '-'})", line={"color": color, "dash": "dot"},
            marker={"symbol": "circle-open"}, customdata=[[r["stage"], r["previous_version"]] for r in live],
            hovertemplate="%{customdata[1]} at " + name + " %{customdata[0]}: loss %{y:.4g}<extra></extra>",
        ), row=2, col=1)  # fmt: skip
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(reversed(rows)),
                     title_text="version", row=1, col=1)  # fmt: skip
    fig.update_yaxes(title_text="live loss (paired events)", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="time of the stage change (UTC)", row=2, col=1)
    return _layout(fig, "Rollout stages per version, with the live loss of candidate and incumbent",
                   height=440 + 40 * len(rows))
