"""The report's HTML pieces: the page style, tables, panels, plots embedded without plotly.js
(the page inlines it once)."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

import plotly.graph_objects as go

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
td.PENDING{color:#6c757d;font-style:italic}td.CANARY{color:#b5651d;font-weight:600}
td.SHADOW,td.CANDIDATE{color:#495057}td.time{white-space:nowrap}
td.col-reason,td.col-example_reason,td.col-from_alerts{min-width:190px}td.col-modules{min-width:120px}
td.col-example{min-width:190px;word-break:break-all}
td.col-alert_id,td.col-request_id,td.col-request{font-family:ui-monospace,monospace;font-size:11.5px}
details{margin-top:10px}summary{cursor:pointer;font-size:13px;color:#1d3557}
"""


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def printable(text: str) -> str:
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
            cells.append(f"<td{cls}>{html.escape(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="note">{len(rows) - max_rows} more rows not shown</p>' if len(rows) > max_rows else ""
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{more}'


def plot(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})  # fmt: skip


def panel(key: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f'<section class="panel" data-panel="{key}"><h2>{html.escape(title)}</h2>{note_html}{body}</section>'


def empty(key: str, title: str, message: str) -> str:
    return (f'<section class="panel empty" data-panel="{key}" data-empty="true"><h2>{html.escape(title)}</h2>'
            f"<p>{html.escape(message)}</p></section>")  # fmt: skip

