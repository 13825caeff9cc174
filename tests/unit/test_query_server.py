"""The query socket and the ready queries, on a real embedded ClickHouse holding a known story."""

from __future__ import annotations

import json
import socket
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from consumers import query_guard
from consumers import query_server as qs
from consumers.store import apply_schema, close_clickhouse, open_clickhouse, query, query_socket_path
from deploy.queries import get_query, named_queries, parse_query
from schemas.errors import InfraError, UnknownKeyError
from schemas.settings import load_settings
from tests.unit import monitoring_data as story


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(run_dir=tmp_path_factory.mktemp("qs"))


@pytest.fixture(scope="module")
def ch(settings):
    client = open_clickhouse(settings)
    apply_schema(client)
    story.populate(client)
    yield client
    close_clickhouse(client)


@pytest.fixture
def server(settings, ch):
    srv = qs.start_query_server(settings)
    assert srv is not None
    yield srv
    qs.stop_query_server(srv)


def named(reader, name, **overrides):
    q = get_query(name)
    cols, rows = reader.query(q.sql, q.parameters({k: str(v) for k, v in overrides.items()}))
    return [dict(zip(cols, r)) for r in rows]


# --- wire values ---------------------------------------------------------------------------------


def test_values_survive_the_wire_with_their_python_types():
    values = [None, True, 3, 2.5, float("nan"), float("inf"), "s", datetime(2026, 1, 2, 3, 4, 5, 6000),
              datetime(2026, 1, 2, tzinfo=UTC), date(2026, 1, 2), Decimal("1.50"),
              UUID(int=7), b"\x00\xff", {1: "a", "k": [1, 2]}, [1, [2, None]]]  # fmt: skip
    wired = json.loads(json.dumps([qs.to_wire(v) for v in values], allow_nan=False))
    back = [qs.from_wire(v) for v in wired]
    assert back[4] != back[4]  # nan
    assert back[:4] + back[5:] == values[:4] + values[5:]
    assert type(back[10]) is Decimal and type(back[7]) is datetime and type(back[9]) is date


@pytest.mark.parametrize("sql", ["SELECT 1", "  with x AS (SELECT 1) SELECT * FROM x", "SHOW TABLES",
                                 "DESCRIBE drift_alerts", "EXPLAIN SELECT 1", "-- note\n/* c */ SELECT 2",
                                 "SELECT ';'"])  # fmt: skip
def test_reads_pass_the_statement_check(sql):
    query_guard.check_read_only(sql)


@pytest.mark.parametrize("sql", ["INSERT INTO drift_alerts SELECT * FROM drift_alerts", "DROP TABLE drift_stats",
                                 "ALTER TABLE drift_stats DELETE WHERE 1", "SET readonly = 0", "",
                                 "SELECT 1; DROP TABLE drift_stats", "OPTIMIZE TABLE drift_alerts FINAL"])  # fmt: skip
def test_writes_and_several_statements_are_refused(sql):
    with pytest.raises(qs.QueryError, match="read-only|one statement"):
        query_guard.check_read_only(sql)


# --- the server ----------------------------------------------------------------------------------


def test_socket_sits_beside_the_data_directory(settings, server):
    assert query_socket_path(settings) == settings.clickhouse_path.resolve().parent / "clickhouse.sock"
    assert server.path == query_socket_path(settings) and server.path.is_socket()
    assert server.path.stat().st_mode & 0o777 == 0o600


def test_open_reader_uses_the_socket_while_it_is_served(settings, server, ch):
    reader = qs.open_reader(settings)
    try:
        assert isinstance(reader, qs.SocketReader)
        direct_cols, direct_rows = query(ch, "SELECT alert_id, window_end_event_time, detector_params "
                                             "FROM drift_alerts FINAL ORDER BY alert_id")  # fmt: skip
        cols, rows = reader.query("SELECT alert_id, window_end_event_time, detector_params "
                                  "FROM drift_alerts FINAL ORDER BY alert_id")  # fmt: skip
        assert (cols, rows) == (direct_cols, direct_rows) and len(rows) == 5
        assert reader.query("SELECT {n:UInt32} * 2 AS x", {"n": 21}) == (["x"], [(42,)])
    finally:
        reader.close()
    assert server.served >= 2


def test_the_engine_refuses_writes_on_the_server_client_whatever_the_text(server):
    with pytest.raises(Exception, match="readonly"):
        server.client.command("DROP TABLE drift_stats")
    with pytest.raises(Exception, match="readonly"):
        server.client.command("INSERT INTO dead_letters (reason) VALUES ('x')")


def test_refusals_and_engine_errors_come_back_as_query_errors(settings, server, ch):
    reader = qs.SocketReader(server.path)
    try:
        with pytest.raises(qs.QueryError, match="read-only"):
            reader.query("TRUNCATE TABLE drift_alerts")
        with pytest.raises(qs.QueryError, match="UNKNOWN_TABLE|does not exist"):
            reader.query("SELECT * FROM no_such_table")
        assert reader.query("SELECT count() FROM drift_alerts FINAL") == (["count()"], [(5,)])  # still usable
    finally:
        reader.close()
    assert query(ch, "SELECT count() FROM drift_alerts FINAL")[1] == [(5,)]


def test_bad_request_lines_get_an_error_line_not_a_hang(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(server.path))
        f = s.makefile("rwb")
        f.write(b"not json\n{\"parameters\": {}}\n")
        f.flush()
        first, second = json.loads(f.readline()), json.loads(f.readline())
    assert first["ok"] is False and first["kind"] == "request"
    assert second["ok"] is False and "sql" in second["error"]


def test_results_are_cut_at_max_rows(server):
    server.max_rows = 3
    reader = qs.SocketReader(server.path)
    try:
        _cols, rows = reader.query("SELECT number FROM numbers(10)")
        assert rows == [(0,), (1,), (2,)] and reader.truncated
    finally:
        reader.close()
        server.max_rows = 100_000


def test_a_stale_socket_file_is_replaced_and_a_live_one_is_not_taken_over(settings, ch):
    path = query_socket_path(settings)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a killed process leaves behind
    stale.close()
    assert path.exists() and not qs.socket_alive(path)
    reader = qs.open_reader(settings)  # nobody serves: the store is opened directly
    assert isinstance(reader, qs.ClientReader)
    srv = qs.start_query_server(settings)
    try:
        assert srv is not None and qs.socket_alive(path)
        with pytest.raises(InfraError, match="already serves"):
            qs.QueryServer(srv.client, path).start()
    finally:
        qs.stop_query_server(srv)
    assert not path.exists()


def test_a_server_dsn_has_no_socket():
    assert query_socket_path(load_settings(clickhouse_dsn="clickhouse://u:p@h:8123/db")) is None


# --- the ready queries answer the questions ------------------------------------------------------


def test_every_ready_query_parses_and_runs(server):
    reader = qs.SocketReader(server.path)
    try:
        for name, q in named_queries().items():
            assert q.title != name and q.description, name
            reader.query(q.sql, q.parameters())
    finally:
        reader.close()


def test_drifting_now_names_slices_features_and_since_when(server):
    reader = qs.SocketReader(server.path)
    try:
        rows = named(reader, "drifting-now")
        wide = named(reader, "drifting-now", window_minutes=200)
    finally:
        reader.close()
    got = {(r["slice"], r["feature"]): r for r in rows}
    assert set(got) == {("eu-west", "amount"), ("ap-south", "amount")}  # us-east's alert is long over
    eu = got["eu-west", "amount"]
    t0 = datetime.fromtimestamp(story.T0 / 1000, UTC).replace(tzinfo=None)
    # the first alert's window runs from minute 55 to 62 with 500 reference and 200 current values:
    # the change began 5/7 of the way in, at minute 60, where the story shifts (not at the window start)
    assert eu["since"] == t0 + timedelta(minutes=60) and eu["first_alert"] == t0 + timedelta(minutes=62)
    assert eu["alerts"] == 3  # the replayed alert counts once
    assert eu["max_severity"] == "HIGH" and eu["alert_types"] == ["DATA_DRIFT"]
    assert eu["latest_score"] == 40.0 + story.LAST_MINUTE
    us = {(r["slice"], r["feature"]): r for r in wide}["us-east", ""]  # performance: no stats, no score
    assert us["latest_score"] is None and us["alert_types"] == ["PERFORMANCE_DRIFT"]


def test_alert_to_retraining_to_result_and_compute_saved(server):
    reader = qs.SocketReader(server.path)
    try:
        links = named(reader, "alert-retraining")
        saved = named(reader, "compute-saved")
    finally:
        reader.close()
    assert {(r["alert_id"], r["request_id"], r["decision"]) for r in links} == {
        ("a-eu-1", "req-eu", "PROMOTED"), ("a-eu-2", "req-eu", "PROMOTED"), ("a-us-1", "req-us", "PENDING")}
    eu = next(r for r in links if r["alert_id"] == "a-eu-1")
    assert (eu["metric_before"], eu["metric_after"], eu["new_version"]) == (0.62, 0.41, "v2")
    [row] = saved
    assert (row["tier"], row["jobs"], row["promoted"], row["rejected"], row["skipped"]) == ("ADAPTER", 2, 1, 1, 1)
    assert row["share_params_updated"] == 0.001 and row["train_seconds"] == 4.0
    assert (row["promoted_seconds"], row["wasted_seconds"]) == (2.5, 1.5)
    assert row["avoided_seconds"] == 2.0, "one skipped request x the mean ADAPTER job of the model"
    assert row["full_retrain_seconds"] == 4000.0 and row["saved_seconds"] == 3996.0
    assert row["full_cost_basis"] == "scaled by parameters"


def test_dead_letters_group_one_cause_per_row(ch):
    """Reasons differing only by a message's own bytes, JSON position or value are one cause."""
    letters = [  # (offset, reason, preview): the messages the streams worker really rejects
        (1, "event: neither Avro single-object encoding (marker C3 01) nor a JSON object (first bytes 6e6f74)", "not"),
        (2, "event: neither Avro single-object encoding (marker C3 01) nor a JSON object (first bytes 000102)", "x"),
        (3, "event: invalid JSON: Expecting ',' delimiter: line 1 column 39 (char 38)", "{"),
        (4, "event: invalid JSON: Expecting ',' delimiter: line 1 column 7 (char 6)", "{"),
        (5, "features.amount: expected a number or null, got 'lots'", "{a}"),
        (6, "features.amount: expected a number or null, got 'many'", "{b}"),
        (6, "features.amount: expected a number or null, got 'many'", "{b}"),  # a replay
        (7, "event: required field(s) missing or empty: ['event_time']", "{c}"),
    ]
    source = " UNION ALL ".join(
        f"SELECT 't' AS source_topic, 0 AS source_partition, toInt64({o}) AS source_offset, 'SchemaError' AS "
        f"error_type, '{r.replace(chr(39), chr(92) + chr(39))}' AS reason, toDateTime64({o}, 3, 'UTC') AS failed_at, "
        f"'{p}' AS value_preview" for o, r, p in letters)  # fmt: skip
    q = get_query("dead-letters")
    assert q.sql.count("FROM dead_letters") == 1
    cols, rows = query(ch, q.sql.replace("FROM dead_letters", f"FROM ({source})"))
    got = {r["reason"]: r for r in (dict(zip(cols, row)) for row in rows)}
    assert {k: v["messages"] for k, v in got.items()} == {
        "event: neither Avro single-object encoding (marker C3 01) nor a JSON object": 2,
        "event: invalid JSON: Expecting ',' delimiter": 2,
        "features.amount: expected a number or null": 2,  # the replay counts once
        "event: required field(s) missing or empty: ['event_time']": 1,
    }
    first = got["features.amount: expected a number or null"]
    assert (first["example_reason"], first["example"]) == ("features.amount: expected a number or null, got 'lots'",
                                                           "{a}")  # fmt: skip


def test_counts_ignore_replays(server):
    reader = qs.SocketReader(server.path)
    try:
        by_type = named(reader, "alerts-by-type")
        by_hour = named(reader, "alerts-by-hour")
        dead = named(reader, "dead-letters")
        alerts = named(reader, "alerts", limit=2)
    finally:
        reader.close()
    assert sum(r["alerts"] for r in by_type) == 5 == sum(r["alerts"] for r in by_hour)
    assert {(r["alert_type"], r["severity"]): r["alerts"] for r in by_type}[("DATA_DRIFT", "HIGH")] == 2
    assert sorted(r["messages"] for r in dead) == [1, 2]
    assert [a["alert_id"] for a in alerts] == ["a-eu-3", "a-ap-1"]


def test_named_query_parameters_are_checked():
    q = get_query("drifting-now")
    assert q.parameters() == {"window_minutes": 60}
    assert q.parameters({"window_minutes": "5"}) == {"window_minutes": 5}
    with pytest.raises(UnknownKeyError, match="window_minutes"):
        q.parameters({"windows": "5"})
    with pytest.raises(UnknownKeyError, match="drifting-now"):
        get_query("drifting")
    parsed = parse_query("x", "-- title: T\n-- line one\n-- param: k Float64 = 0.5\nSELECT {k:Float64}")
    assert (parsed.title, parsed.description, parsed.parameters()) == ("T", "line one", {"k": 0.5})
