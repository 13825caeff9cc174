"""``driftctl report``: the HTML is self-contained and its plots render in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from consumers.query_server import open_reader
from consumers.store import apply_schema, close_clickhouse, open_clickhouse
from deploy.report import QUERIES, ReportData, Table, gather, render, retrain_requests, write_report
from deploy.report_figures import dead_letters_figure, drift_timeline_figure, rollout_figure
from schemas.settings import load_settings
from tests.unit import monitoring_data as story

PLOTS = ("plot-drift-timeline", "plot-alerts-by-type", "plot-alerts-by-hour", "plot-compute-saved",
         "plot-retrain-outcomes", "plot-dead-letters", "plot-rollouts")  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert path, "headless Chromium is needed for this test: `make deps` installs Debian's chromium"
    return path


def run_chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The story's report, written the way `driftctl report` writes it (no services: direct reader)."""
    tmp = tmp_path_factory.mktemp("report")
    settings = load_settings(run_dir=tmp)
    client = open_clickhouse(settings)
    apply_schema(client)
    story.populate(client)
    try:
        reader = open_reader(settings)
        summary = write_report(reader, tmp / "out" / "report.html")
        data = gather(reader)
    finally:
        close_clickhouse(client)
    return summary, data, tmp / "out" / "report.html"


def test_report_has_every_panel_and_no_external_resource(report):
    summary, _, path = report
    page = path.read_text(encoding="utf-8")
    assert summary["bytes"] == path.stat().st_size and summary["plots"] == len(PLOTS)
    for plot in PLOTS:
        assert f'id="{plot}"' in page
    for panel in ("drifting-now", "drift-timeline", "alerts-by-type", "alerts-by-hour", "retraining", "dead-letters",
                  "rollouts"):
        assert f'data-panel="{panel}"' in page
    assert 'data-empty="true"' not in page
    # everything inline: no tag loads a script, style, image or frame from elsewhere
    assert not re.search(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=", page, re.IGNORECASE)
    assert "Plotly.newPlot" in page and "a-eu-1" in page  # the alert-to-retraining table


def test_report_numbers_come_from_the_ready_queries(report):
    _, data, path = report
    page = path.read_text(encoding="utf-8")
    assert set(data.tables) == set(QUERIES)
    assert "<b>2</b><span>slice x feature drifting now" in page
    assert "<b>5</b><span>alerts (distinct)" in page  # the replay counts once
    assert "<b>3</b><span>dead letters" in page


def test_plots_render_in_headless_chromium(report):
    _, _, path = report
    result = run_chromium("--dump-dom", path.as_uri())
    dom = result.stdout
    assert result.returncode == 0 and "</html>" in dom, result.stderr[-2000:]
    sections = {}
    for plot in PLOTS:  # the DOM after plotly.js ran: each plot div holds its SVG
        start = dom.index(f'id="{plot}"')
        following = [dom.find(f'id="{p}"', start + 1) for p in PLOTS]
        end = min([i for i in following if i > start] + [len(dom)])
        sections[plot] = dom[start:end]
        assert 'class="main-svg"' in sections[plot], f"{plot} did not render"
    timeline = sections["plot-drift-timeline"]
    assert timeline.count('class="trace scatter') >= 3 + 3  # a line per slice + a marker trace per severity
    assert len(re.findall(r'class="js-line" d="M[^"]{40,}', timeline)) >= 3  # lines with real paths
    assert len(re.findall(r'class="point"', sections["plot-alerts-by-type"])) >= 4  # a bar per type x severity
    assert 'class="hm"' in sections["plot-alerts-by-hour"] or "heatmaplayer" in sections["plot-alerts-by-hour"]
    assert len(re.findall(r'class="point"', sections["plot-dead-letters"])) == 2


def test_screenshot_is_not_blank(report, tmp_path):
    _, _, path = report
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body style='background:#f4f5f7'></body></html>")
    shots = {}
    for name, page in (("report", path), ("blank", blank)):
        shots[name] = tmp_path / f"{name}.png"
        result = run_chromium("--window-size=1300,2400", f"--screenshot={shots[name]}", page.as_uri())
        assert shots[name].exists(), result.stderr[-2000:]
    # a PNG of a uniform page compresses to almost nothing; plots, text and colours do not
    assert shots["report"].stat().st_size > 5 * shots["blank"].stat().st_size


def test_an_empty_store_renders_explicit_empty_panels():
    tables = {name: Table([], []) for name in QUERIES}
    page = render(ReportData("test", tables))
    assert "No retraining yet" in page and "No dead letters" in page and "No alerts yet" in page
    assert "No rollout yet" in page
    assert 'class="plotly-graph-div"' not in page
    assert page.count('data-empty="true"') == 6


# --- the figures say what the data says ----------------------------------------------------------


def _rows(data: ReportData, name: str) -> list[dict]:
    return data[name]


def test_timeline_alerts_sit_on_their_slice_row_and_zero_scores_are_gaps(report):
    _, data, _ = report
    alerts = _rows(data, "alerts")
    timeline = [dict(r) for r in _rows(data, "drift-timeline")]
    for r in timeline:  # no reference yet on any feature of the slice: not a point at some floor
        if (r["slice"], r["minute"]) == (timeline[0]["slice"], timeline[0]["minute"]):
            r["score_max"] = 0.0
    fig = drift_timeline_figure(timeline, alerts)
    strip = [t for t in fig.data if t.yaxis == "y2" and t.x and t.x[0] is not None]
    assert sum(len(t.x) for t in strip) == len(alerts) == 5  # every distinct alert once, on the alert row
    assert {y for t in strip for y in t.y} == {a["slice"] for a in alerts}
    lines = {t.name: t for t in fig.data if t.yaxis == "y" and t.mode == "lines+markers"}
    alerted = {a["slice"] for a in alerts}
    assert alerted <= set(lines) and len({lines[s].line.color for s in alerted}) == len(alerted)  # own colours
    first = next(t for t in fig.data if t.yaxis == "y" and t.customdata[0][0] == timeline[0]["slice"])
    assert None in first.y and 0.0 not in first.y
    legend = {t.name for t in fig.data if t.showlegend is not False}
    assert {"HIGH alert", "MEDIUM alert", "LOW alert", "data drift", "performance drift"} <= legend


def test_dead_letter_bars_stay_apart_and_retraining_reads_per_request(report):
    _, data, _ = report
    dead = [{"source_topic": "t", "error_type": "SchemaError", "reason": "event: neither Avro nor JSON " + "x" * 80 + k,
             "messages": n, "example": ""} for k, n in (("a", 1), ("b", 2))]  # fmt: skip
    fig = dead_letters_figure(dead)
    assert len(set(fig.data[0].y)) == 2 and list(fig.data[0].x) == [1, 2]  # same-looking reasons: two bars
    requests = {r["request_id"]: r for r in retrain_requests(_rows(data, "alert-retraining"))}
    assert set(requests) == {"req-eu", "req-us"}
    assert requests["req-eu"]["from_alerts"].count("DATA_DRIFT eu-west/amount") == 2
    assert requests["req-eu"]["metric"] == "log_loss 0.62 -> 0.41" and requests["req-eu"]["new_version"] == "v2"
    assert requests["req-us"]["decision"] == "PENDING" and requests["req-us"]["metric"] == ""
    assert "(performance)" in requests["req-us"]["from_alerts"]


def test_report_tables_fit_and_mark_outcomes(report):
    _, _, path = report
    page = path.read_text(encoding="utf-8")
    assert page.count('<div class="scroll"><table>') >= 5  # wide tables scroll inside their panel
    assert '<td class="col-decision PROMOTED">PROMOTED</td>' in page
    assert "<summary>the latest alerts (5)</summary>" in page
    assert "since (est.)" in page


def test_rollout_panel_shows_each_stage_and_both_live_losses(report):
    _, data, path = report
    page = path.read_text(encoding="utf-8")
    rollouts = data["rollouts"]
    assert [r["stage"] for r in rollouts] == ["CANDIDATE", "SHADOW", "CANARY", "PROMOTED", "ROLLED_BACK"]  # replay once
    assert "<b>1 / 1</b><span>rollouts promoted / rolled back" in page
    fig = rollout_figure(rollouts)
    stages = {t.name: list(t.x) for t in fig.data if t.yaxis == "y"}
    assert set(stages) == {"candidate", "shadow", "canary", "promoted", "rolled_back"}
    losses = {t.name: list(t.y) for t in fig.data if t.yaxis == "y2"}
    assert losses == {"v2 live loss": [0.43, 0.42, 0.66], "its incumbent (v1)": [0.61, 0.60, 0.52]}
    (version,) = data["version-performance"]
    assert (version["version"], version["last_stage"], version["offline_after"]) == ("v2", "ROLLED_BACK", 0.41)
    assert version["live_loss_delta"] == pytest.approx(0.14)
    assert '<td class="col-stage CANARY">CANARY</td>' in page
