"""The monitoring read paths are read-only: each probe of issue 12 part 7, on the real engine,
through the query socket and through the direct store, is refused and leaves no trace."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from consumers import query_guard, store
from consumers import query_server as qs
from consumers.store import apply_schema, close_clickhouse, open_clickhouse
from schemas.settings import load_settings
from tests.conftest import REPO


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(run_dir=tmp_path_factory.mktemp("guard"), query_timeout_seconds=30)


@pytest.fixture(scope="module")
def ch(settings):
    client = open_clickhouse(settings)
    apply_schema(client)
    client.command("INSERT INTO dead_letters (reason) VALUES ('kept')")
    yield client
    close_clickhouse(client)


@pytest.fixture(scope="module")
def http_hits():
    """A local HTTP server counting requests: url() must never reach it."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret\n")

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], hits
    srv.shutdown()


@pytest.fixture(params=["socket", "direct"])
def reader(request, settings, ch):
    if request.param == "socket":
        srv = qs.start_query_server(settings)
        r = qs.open_reader(settings)
        assert isinstance(r, qs.SocketReader)
        yield r
        r.close()
        qs.stop_query_server(srv)
    else:
        r = qs.open_reader(settings)  # nobody serves: the store itself, read-only
        assert isinstance(r, qs.ClientReader)
        yield r
        r.close()


def probes(tmp, port):
    out = tmp / "out.txt"
    return out, [
        (f"SELECT * FROM dead_letters INTO OUTFILE '{out}' TRUNCATE", "INTO OUTFILE"),
        (f"SELECT 1 INTO OUTFILE '{out}' AND STDOUT", "INTO OUTFILE"),
        (f"SELECT 1 UNION ALL SELECT 2 INTO OUTFILE '{out}' COMPRESSION 'gzip'", "INTO OUTFILE"),
        (f"EXPLAIN SELECT 1 INTO OUTFILE '{out}'", "INTO OUTFILE"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file\\(\\)|readonly"),
        ("SELECT file('/etc/passwd')", "function file\\(\\)"),
        ("DESCRIBE TABLE file('/etc/passwd', 'TSVWithNames')", "file\\(\\)"),
        (f"SELECT * FROM url('http://127.0.0.1:{port}/x', 'LineAsString')", "url\\(\\)|readonly"),
        ("SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')", "mysql\\(\\)|readonly"),
        ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "remote\\(\\)|readonly"),
        ("SELECT * FROM s3('http://127.0.0.1:1/bucket/x.csv', 'CSV')", "s3\\(\\)|readonly"),
        ("SELECT * FROM numbers(2) AS n JOIN (SELECT * FROM url('http://127.0.0.1:1/a', 'CSV')) u ON 1", "url\\(\\)"),
        ("SELECT 1 SETTINGS max_execution_time = 100000", "READONLY|readonly"),
        ("SET readonly = 0", "read-only"),
        ("INSERT INTO dead_letters (reason) VALUES ('x')", "read-only"),
        ("ALTER TABLE dead_letters DELETE WHERE 1", "read-only"),
        ("DROP TABLE dead_letters", "read-only"),
        ("CREATE TABLE x (a Int8) ENGINE = Memory", "read-only"),
        ("TRUNCATE TABLE dead_letters", "read-only"),
        ("SYSTEM DROP MARK CACHE", "read-only"),
        ("OPTIMIZE TABLE dead_letters FINAL", "read-only"),
        ("SELECT 1; DROP TABLE dead_letters", "one statement"),
        ("SELECT 1; INSERT INTO dead_letters (reason) VALUES ('x')", "one statement"),
        ("/* x */ INSERT INTO dead_letters (reason) VALUES ('x')", "read-only"),
    ]


def test_every_probe_is_refused_on_every_path(reader, tmp_path, http_hits, ch):
    port, hits = http_hits
    out, cases = probes(tmp_path, port)
    for sql, reason in cases:
        with pytest.raises(qs.QueryError, match=reason):
            reader.query(sql)
    assert not out.exists(), "INTO OUTFILE wrote a file"
    assert hits == [], "url() reached the network"
    assert store.query(ch, "SELECT reason FROM dead_letters")[1] == [("kept",)]  # nothing written or dropped
    assert reader.query("SELECT getSetting('readonly') AS r") == (["r"], [(1,)])
    assert reader.query("SELECT getSetting('max_execution_time') AS t")[1] == [(30,)]  # the user's limit stays


def test_parameters_are_values_not_sql(reader, ch):
    evil = "kept' OR 1 = 1; DROP TABLE dead_letters; --"
    _cols, rows = reader.query("SELECT count() AS n FROM dead_letters WHERE reason = {r:String}", {"r": evil})
    assert rows == [(0,)]
    assert reader.query("SELECT {r:String} AS v", {"r": evil})[1] == [(evil,)]
    assert store.query(ch, "SELECT count() FROM dead_letters")[1] == [(1,)]


def test_reads_still_work(reader):
    assert reader.query("SELECT number FROM numbers(3)")[1] == [(0,), (1,), (2,)]
    assert reader.query("SHOW TABLES")[1]
    assert reader.query("WITH a AS (SELECT 'INTO OUTFILE' AS s) SELECT s FROM a")[1] == [("INTO OUTFILE",)]
    assert reader.query("SELECT count() FROM merge(currentDatabase(), '^dead_letters$')")[1] == [(1,)]
    assert reader.query("DESCRIBE TABLE dead_letters")[1]


def test_refusal_reads_the_engine_ast():
    into = ["SelectWithUnionQuery (children 3)", " ExpressionList (children 1)", "  SelectQuery (children 2)",
            "   ExpressionList (children 1)", "    Literal UInt64_1", "   Literal UInt64_5", " Literal '/tmp/x'",
            " Identifier CSV"]  # fmt: skip
    assert "INTO OUTFILE" in query_guard.refusal(into)
    assert query_guard.refusal(into[:6] + into[7:]) is None  # a LIMIT literal is not an outfile
    table_fn = ["DescribeQuery (children 2)", " TableExpression (children 1)", "  Function file (children 1)",
                "   ExpressionList (children 1)", "    Literal 'x'", " Identifier Native"]  # fmt: skip
    assert "file()" in query_guard.refusal(table_fn)
    assert query_guard.refusal([s.replace("file", "numbers") for s in table_fn]) is None


def test_server_readers_get_the_read_only_settings_with_readonly_last(monkeypatch):
    seen = {}
    monkeypatch.setattr(store.clickhouse_connect, "get_client", lambda **kw: seen.update(kw) or "client")
    settings = load_settings(clickhouse_dsn="clickhouse://bob:pw@h.example:8123/mon", query_timeout_seconds=20)
    assert store.open_readonly(settings) == "client"
    assert seen["settings"] == {"max_execution_time": 20, "allow_ddl": 0, "allow_introspection_functions": 0,
                                "readonly": 1}  # fmt: skip
    assert list(seen["settings"])[-1] == "readonly"


def test_driftctl_query_refuses_a_write_on_the_stopped_store(tmp_path):
    env = {**os.environ, "DRIFT_RUN_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "deploy.cli", "query"]
    write = subprocess.run([*run, "INSERT INTO dead_letters (reason) VALUES ('x')"], check=False, env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert write.returncode == 2 and "read-only" in write.stderr and len(write.stderr.strip().splitlines()) == 1
    probe = subprocess.run([*run, "SELECT * FROM file('/etc/passwd', 'LineAsString')"], check=False, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert probe.returncode == 2 and "file()" in probe.stderr and "root:" not in probe.stdout
