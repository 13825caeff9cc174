"""DSN parsing, the embedded store, the DDL and persistence across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from consumers import store
from consumers.rows import TABLES
from schemas.errors import ConfigError, InfraError
from schemas.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


# --- DSN parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn, path",
    [("", "/default"), ("  ", "/default"), ("chdb:/data/ch", "/data/ch"), ("chdb:///data/ch", "/data/ch"),
     ("chdb:rel/ch", "rel/ch")],
)  # fmt: skip
def test_embedded_dsns(dsn, path):
    target = store.parse_dsn(dsn, Path("/default"))
    assert target.kind == "chdb" and target.path == Path(path)


def test_server_dsn_http():
    t = store.parse_dsn("clickhouse://alice:p%40ss%3Aw@ch.example:8124/drift", Path("/x"))
    assert (t.kind, t.host, t.port, t.username, t.password, t.database, t.secure) == (
        "server", "ch.example", 8124, "alice", "p@ss:w", "drift", False)  # fmt: skip
    assert "p@ss" not in repr(t) and "p@ss" not in t.describe()


def test_server_dsn_https_defaults_and_options():
    t = store.parse_dsn("clickhouses://ch.example?verify=false&connect_timeout=3", Path("/x"))
    assert (t.port, t.secure, t.username, t.password, t.database) == (8443, True, "default", "", "default")
    assert t.options == {"verify": False, "connect_timeout": 3.0}


@pytest.mark.parametrize(
    "dsn",
    ["postgres://u:secret@h/db", "localhost:8123", "chdb:", "chdb:memory", "clickhouse://", "clickhouse://h:notaport",
     "clickhouse://u:secret@h/a/b", "clickhouse://h/db?bogus=1", "http://u:secret@h:8123"],
)  # fmt: skip
def test_bad_dsn_names_the_variable_and_the_forms_without_leaking_secrets(dsn):
    with pytest.raises(ConfigError) as err:
        store.parse_dsn(dsn, Path("/x"))
    message = str(err.value)
    assert "DRIFT_CLICKHOUSE_DSN" in message and "chdb:PATH" in message and "clickhouse://" in message
    assert "secret" not in message


def test_bad_dsn_from_settings():
    with pytest.raises(ConfigError, match="DRIFT_CLICKHOUSE_DSN"):
        store.open_clickhouse(load_settings(clickhouse_dsn="mysql://h/db"))


def test_server_client_arguments(monkeypatch):
    seen = {}
    monkeypatch.setattr(store.clickhouse_connect, "get_client", lambda **kw: seen.update(kw) or "client")
    settings = load_settings(clickhouse_dsn="clickhouses://bob:pw@h.example:9443/mon?ca_cert=/ca.pem")
    assert store.open_clickhouse(settings) == "client"
    assert seen == {"host": "h.example", "port": 9443, "username": "bob", "password": "pw", "database": "mon",
                    "secure": True, "autogenerate_session_id": False, "ca_cert": "/ca.pem"}  # fmt: skip


def test_unreachable_server_is_an_infra_error(monkeypatch):
    def refuse(**kw):
        raise OSError("connection refused")

    monkeypatch.setattr(store.clickhouse_connect, "get_client", refuse)
    with pytest.raises(InfraError, match=r"http://u@h:8123/default.*connection refused") as err:
        store.open_clickhouse(load_settings(clickhouse_dsn="clickhouse://u:topsecret@h"))
    assert "topsecret" not in str(err.value)


# --- SQL splitting ---------------------------------------------------------------------------


def test_split_statements_respects_quotes_and_comments():
    text = "-- a; comment\nCREATE TABLE a (x String COMMENT 'x;y') ENGINE = Memory;\n\n-- only a comment;\n" \
           "SELECT ';' -- trailing; comment\n;"  # fmt: skip
    assert store.split_statements(text) == [
        "CREATE TABLE a (x String COMMENT 'x;y') ENGINE = Memory",
        "SELECT ';'",
    ]


def test_ddl_files_are_ordered_and_one_statement_each():
    names = [name for name, _ in store.ddl_files()]
    assert names == ["001_drift_stats.sql", "002_drift_alerts.sql", "003_dead_letters.sql",
                     "004_retrain_requests.sql", "005_retrain_results.sql", "006_rollups.sql",
                     "007_retrain_results_v2.sql", "008_model_rollouts.sql", "009_model_rollouts_v2.sql"]  # fmt: skip
    for name, text in store.ddl_files():
        statements = store.split_statements(text)
        if name < "006":  # one table per file; later files add rollups (tables + their views)
            assert len(statements) == 1, name
        for statement in statements:  # idempotent: apply_schema runs at every sink start
            assert statement.startswith(("CREATE TABLE IF NOT EXISTS", "CREATE MATERIALIZED VIEW IF NOT EXISTS",
                                          "ALTER TABLE")), name
            if statement.startswith("ALTER TABLE"):  # a migration: every clause IF NOT EXISTS
                assert statement.count("ADD COLUMN") == statement.count("ADD COLUMN IF NOT EXISTS"), name


# --- the embedded store ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(run_dir=tmp_path_factory.mktemp("store-run"))


@pytest.fixture(scope="module")
def ch(settings):
    client = store.open_clickhouse(settings)
    yield client
    store.close_clickhouse(client)


def test_default_dsn_opens_chdb_under_run_dir_and_caches_the_client(settings, ch):
    assert settings.clickhouse_path.is_dir()
    assert store.open_clickhouse(settings) is ch
    same_dir = load_settings(clickhouse_dsn=f"chdb:{settings.clickhouse_path}/")
    assert store.open_clickhouse(same_dir) is ch


def test_apply_schema_is_idempotent_and_creates_the_tables(ch):
    assert store.apply_schema(ch) == [name for name, _ in store.ddl_files()]
    store.apply_schema(ch)
    _, got = store.query(ch, "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name")
    rollups = [("alerts_hourly", "AggregatingMergeTree"), ("alerts_hourly_mv", "MaterializedView"),
               ("drift_score_minutely", "AggregatingMergeTree"), ("drift_score_minutely_mv", "MaterializedView")]
    assert got == sorted([(t, "ReplacingMergeTree") for t in TABLES] + rollups)


def test_query_returns_names_and_tuples(ch):
    names, got = store.query(ch, "SELECT number AS n, toString(number) AS s FROM numbers({k:UInt8})", {"k": 2})
    assert names == ["n", "s"] and got == [(0, "0"), (1, "1")]


def test_a_second_path_in_the_same_process_is_refused_clearly(ch, tmp_path):
    with pytest.raises(InfraError, match="one data path per process"):
        store.open_clickhouse(load_settings(clickhouse_dsn=f"chdb:{tmp_path / 'other'}"))
    assert store.query(ch, "SELECT 1")[1] == [(1,)]  # the open store is unharmed


def test_another_process_cannot_open_a_path_in_use(settings, ch):
    code = f"""
        from schemas.settings import load_settings
        from consumers.store import open_clickhouse
        open_clickhouse(load_settings(run_dir={str(settings.run_dir)!r}))
    """
    proc = _python(code)
    assert proc.returncode != 0
    assert "InfraError" in proc.stderr and "another process" in proc.stderr


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_data_persists_across_processes(tmp_path):
    write = f"""
        from schemas.settings import load_settings
        from consumers.store import open_clickhouse, apply_schema
        from consumers.rows import ALERTS
        client = open_clickhouse(load_settings(clickhouse_dsn="chdb:{tmp_path / 'ch'}"))
        apply_schema(client)
        row = ("a1", 1, "DATA_DRIFT", "HIGH", "m", "eu", "x", "adwin", {{}}, 1.0, 0.5, 0.9,
               1, 0.0, 1.0, 0.0, 0.0, 1, 1.0, 1.0, 1.0, 1.0, "drift.events", 0, 0, 9, 0, 1, "w", "0", 2)
        client.insert("drift_alerts", [row, row], column_names=list(ALERTS.columns))
        client.insert("drift_alerts", [row], column_names=list(ALERTS.columns))
    """
    read = f"""
        from schemas.settings import load_settings
        from consumers.store import open_clickhouse, apply_schema, query
        client = open_clickhouse(load_settings(clickhouse_dsn="chdb:{tmp_path / 'ch'}"))
        apply_schema(client)
        print(query(client, "SELECT alert_id, count() FROM drift_alerts FINAL GROUP BY alert_id")[1])
    """
    first = _python(write)
    assert first.returncode == 0, first.stderr
    second = _python(read)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "[('a1', 1)]"
