"""The Grafana dashboard, checked the way Grafana and its ClickHouse plugin would take it.

Grafana itself is not installable here (no package, no Docker), so the import is reproduced:
the JSON's structure as the dashboard model and the plugin read it (schemaVersion, unique
panel ids, a 24-column grid without overlaps, queries of type grafana-clickhouse-datasource),
the plugin's macro expansion (``$__timeFilter(c)`` -> ``c >= toDateTime(from) AND c <=
toDateTime(to)``, ``$__timeInterval(c)`` -> ``toStartOfInterval(toDateTime(c), INTERVAL n
second)``, as in grafana/clickhouse-datasource pkg/macros) and Grafana's template variables,
then every query run on the real chdb schema through a ``readonly=2`` client, as a read-only
Grafana user would, with the result shapes the panels need.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from importlib import resources

import pytest
import yaml

from consumers.store import apply_schema, close_clickhouse, open_clickhouse, open_readonly_embedded, query
from deploy.queries import get_query
from schemas.settings import load_settings
from tests.unit import monitoring_data as story

PLUGIN = "grafana-clickhouse-datasource"
DATASOURCE = {"type": PLUGIN, "uid": "${datasource}"}
CORE_PANELS = {"table", "timeseries", "barchart", "stat", "heatmap", "state-timeline", "bargauge", "piechart", "text"}
STORY_FROM, STORY_TO = story.T0 // 1000, (story.T0 + (story.LAST_MINUTE + 1) * story.MIN) // 1000
BEFORE_FROM, BEFORE_TO = STORY_FROM - 86_400, STORY_FROM - 3_600  # a day-long range ending before the story


def dashboard() -> dict:
    return json.loads(resources.files("deploy").joinpath("grafana", "dashboard.json").read_text())


def expand(sql: str, slices: list[str], t_from: int = STORY_FROM, t_to: int = STORY_TO, interval: int = 60) -> str:
    """What Grafana (template variables) and the plugin (macros) make of a panel's SQL."""
    sql = sql.replace("${slice:singlequote}", ", ".join(f"'{s}'" for s in slices))  # "All": every value
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({t_from}) AND \1 <= toDateTime({t_to})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval} second)", sql)
    assert not re.search(r"\$\{?\w|\[\[\w", sql), f"a variable or macro left unexpanded in {sql}"
    assert not re.search(r"\{\w+:\w+\}", sql), "ClickHouse query parameters: Grafana binds none"
    return sql


@pytest.fixture(scope="module")
def ro(tmp_path_factory):
    """A read-only client (readonly=2, as the query socket and a Grafana user) on a store holding the story."""
    settings = load_settings(run_dir=tmp_path_factory.mktemp("grafana"))
    client = open_clickhouse(settings)
    apply_schema(client)
    story.populate(client)
    reader = open_readonly_embedded(settings)
    yield reader
    reader.close()
    close_clickhouse(client)


def targets(dash: dict) -> list[tuple[str, dict]]:
    found = [(p["title"], t) for p in dash["panels"] for t in p["targets"]]
    found += [(a["name"], a["target"]) for a in dash["annotations"]["list"] if "target" in a]
    return found


def test_dashboard_model_imports():
    """What Grafana's dashboard import needs, and what the plugin reads from each query."""
    dash = dashboard()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dash["uid"]) and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert {"from", "to"} <= set(dash["time"]) and dash["timezone"] == "utc"
    assert {r["id"] for r in dash["__requires"]} == {PLUGIN, "grafana"}
    ids = [p["id"] for p in dash["panels"]]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)) == 9
    cells: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        assert p["type"] in CORE_PANELS, p["title"]
        assert p["datasource"] == DATASOURCE and p["title"] and p["description"], p["title"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert g["h"] > 0 and 0 < g["w"] <= 24 and g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["y"] >= 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):  # Grafana's grid: panels must not overlap
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[x, y]}"
                cells[x, y] = p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]) >= 1, p["title"]
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("drifting now", "drift score per slice", "alerts by type and severity", "per slice per hour",
                  "retraining", "compute saved", "dead letters", "rollouts: stage changes",
                  "live loss of candidate and incumbent"):  # fmt: skip
        assert topic in titles
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == PLUGIN
    assert variables["slice"]["datasource"] == DATASOURCE and variables["slice"]["includeAll"]
    for name, target in targets(dash):
        assert target["datasource"] == DATASOURCE, name
        assert target["editorType"] == "sql" and target["rawSql"].strip(), name
        # the plugin's frontend query type and the backend's format (sqlds: 0 time series, 1 table)
        assert (target["queryType"], target["format"]) in (("timeseries", 0), ("table", 1)), name
        assert target["pluginVersion"].startswith("4."), name
    assert dash["annotations"]["list"][0]["target"]["rawSql"].count("drift_alerts") == 1  # alert markers
    json.dumps(dash)  # round-trips


def test_every_query_runs_read_only_on_the_schema_with_the_shape_its_panel_needs(ro):
    dash = dashboard()
    slices = list(story.SLICES)
    panel_type = {p["title"]: p["type"] for p in dash["panels"]}
    variable = dash["templating"]["list"][1]
    cols, rows = query(ro, expand(variable["query"], slices))
    assert len(cols) == 1 and {r[0] for r in rows} == set(slices), "the slice variable lists every slice"
    for name, target in targets(dash):
        cols, rows = query(ro, expand(target["rawSql"], slices))
        assert rows, f"{name}: no rows on the story data"
        if target["queryType"] == "timeseries":  # long format: time, string labels, numbers (plugin pivots)
            assert cols[0] == "time" and all(isinstance(r[0], datetime) for r in rows), name
            kinds = [{type(r[i]) for r in rows} for i in range(1, len(cols))]
            assert any(k <= {int, float} for k in kinds) and all(k <= {int, float} or k == {str} for k in kinds), name
        if name in panel_type and panel_type[name] == "barchart":
            panel = next(p for p in dash["panels"] if p["title"] == name)
            matrix = next(t["options"] for t in panel["transformations"] if t["id"] == "groupingToMatrix")
            assert {matrix["rowField"], matrix["columnField"], matrix["valueField"]} <= set(cols), name
            assert panel["options"]["xField"] == f"{matrix['rowField']}\\{matrix['columnField']}", name
    annotation = dash["annotations"]["list"][0]["target"]
    cols, rows = query(ro, expand(annotation["rawSql"], slices))
    got = [dict(zip(cols, r)) for r in rows]
    assert {"time", "title", "text", "tags"} <= set(cols) and len(got) == len(story.ALERTS)  # the replay shows once
    assert all(isinstance(a["time"], datetime) and isinstance(a["tags"], list) for a in got)


def test_the_time_range_and_the_slice_variable_filter(ro):
    """A range before the story empties every time-filtered panel; one slice selected shows only it."""
    dash = dashboard()
    over_time = {p["title"] for p in dash["panels"] if p["type"] in ("timeseries", "barchart")}
    over_time |= {a["name"] for a in dash["annotations"]["list"]}
    for name, target in targets(dash):
        if "$__timeFilter" not in target["rawSql"]:
            assert name not in over_time, f"{name} ignores the dashboard's time range"
            continue
        assert not query(ro, expand(target["rawSql"], list(story.SLICES), BEFORE_FROM, BEFORE_TO))[1], name
        if "${slice:singlequote}" in target["rawSql"]:
            cols, rows = query(ro, expand(target["rawSql"], ["ap-south"]))
            assert rows and all(r[cols.index("slice")] == "ap-south" for r in rows if "slice" in cols), name


def test_table_panels_say_what_the_named_queries_say(ro):
    """Panels mirroring a ready query hold its SQL (defaults inlined) and give the same rows."""
    for panel in dashboard()["panels"]:
        named = re.search(r"--named ([\w-]+)", panel["description"])
        if not named:
            continue
        q = get_query(named.group(1))
        statement = "\n".join(line for line in q.sql.splitlines() if not line.startswith("--"))
        for name, value in q.parameters().items():
            statement = re.sub(rf"\{{{name}:\w+\}}", str(value), statement)
        assert panel["targets"][0]["rawSql"].strip() == statement.strip(), panel["title"]
        assert query(ro, panel["targets"][0]["rawSql"]) == query(ro, q.sql, q.parameters()), panel["title"]


def test_provisioning_files_load():
    folder = resources.files("deploy").joinpath("grafana", "provisioning")
    ds = yaml.safe_load(folder.joinpath("datasources", "clickhouse.yaml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == PLUGIN
    assert {"host", "port", "protocol", "username"} <= set(ds["datasources"][0]["jsonData"])
    boards = yaml.safe_load(folder.joinpath("dashboards", "driftwatch.yaml").read_text())
    assert boards["apiVersion"] == 1 and boards["providers"][0]["type"] == "file"
    assert boards["providers"][0]["options"]["path"]
