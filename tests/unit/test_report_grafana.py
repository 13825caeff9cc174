"""The Grafana dashboard: valid for the ClickHouse plugin, same panels as the report, SQL that runs."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import yaml

from consumers.store import query
from deploy.queries import get_query
from tests.unit import monitoring_data as story

PLUGIN = "grafana-clickhouse-datasource"


def dashboard() -> dict:
    return json.loads(resources.files("deploy").joinpath("grafana", "dashboard.json").read_text())


def expand_macros(sql: str, slices: list[str]) -> str:
    """What the plugin does to the macros, for an all-time range and every slice selected."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= toDateTime64(0, 3) AND \1 <= toDateTime64(4102444800, 3)", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(\1, INTERVAL 60 second)", sql)
    sql = sql.replace("${slice:singlequote}", ", ".join(f"'{s}'" for s in slices))
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


@pytest.fixture(scope="module")
def ch(ch):
    """The shared store, with the test story in it."""
    story.populate(ch)
    return ch


def targets(dash: dict) -> list[tuple[str, dict]]:
    found = [(p["title"], t) for p in dash["panels"] for t in p["targets"]]
    found += [(a["name"], a["target"]) for a in dash["annotations"]["list"] if "target" in a]
    return found


def test_dashboard_is_for_the_clickhouse_plugin_with_the_report_panels():
    dash = dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) == 7
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("drifting now", "drift score per slice", "alerts by type and severity", "per slice per hour",
                  "retraining", "compute saved", "dead letters"):  # fmt: skip
        assert topic in titles
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == PLUGIN
    for name, target in targets(dash):
        assert target["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}, name
        assert target["editorType"] == "sql" and target["rawSql"].strip(), name
        assert (target["queryType"], target["format"]) in (("timeseries", 0), ("table", 1)), name
    assert dash["annotations"]["list"][0]["target"]["rawSql"].count("drift_alerts") == 1  # alert markers


def test_every_panel_query_runs_on_the_schema(ch):
    dash = dashboard()
    slices = list(story.SLICES)
    for name, target in targets(dash) + [("slice variable", {"rawSql": dash["templating"]["list"][1]["query"]})]:
        cols, rows = query(ch, expand_macros(target["rawSql"], slices))
        assert rows, f"{name}: no rows on the story data"
        if target.get("queryType") == "timeseries":
            assert cols[0] == "time", name


def test_table_panels_say_what_the_named_queries_say(ch):
    """Panels mirroring a ready query give the same rows (one answer everywhere)."""
    for panel in dashboard()["panels"]:
        named = re.search(r"--named ([\w-]+)", panel["description"])
        if not named:
            continue
        q = get_query(named.group(1))
        assert query(ch, panel["targets"][0]["rawSql"]) == query(ch, q.sql, q.parameters()), panel["title"]


def test_provisioning_files_load():
    folder = resources.files("deploy").joinpath("grafana", "provisioning")
    ds = yaml.safe_load(folder.joinpath("datasources", "clickhouse.yaml").read_text())
    assert ds["datasources"][0]["type"] == PLUGIN
    boards = yaml.safe_load(folder.joinpath("dashboards", "driftwatch.yaml").read_text())
    assert boards["providers"][0]["type"] == "file"
