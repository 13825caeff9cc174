"""ClickHouse access: one way to open the store, apply the DDL and run SQL.

``DRIFT_CLICKHOUSE_DSN`` chooses the store (see :func:`parse_dsn`):

* ``''`` -- ClickHouse's embedded engine (chdb) under ``run_dir/clickhouse``;
* ``chdb:PATH`` -- the embedded engine at PATH;
* ``clickhouse://user:pass@host:8123/db`` (HTTP) or ``clickhouses://...`` (HTTPS) -- a server.

Both go through ``clickhouse_connect`` clients, so callers see one API.

chdb facts this module works around (chdb 4.x via clickhouse-connect's chdb backend):

* a process hosts one embedded engine, bound to one data path: opening a second path
  while a client on the first is open fails, so clients are cached per path and
  :func:`close_clickhouse` closes them before another path can be opened;
* a data path is locked by the process using it: a second process (even read-only)
  cannot open it and chdb only says "Error initializing EmbeddedServer", so that
  error is reworded here. Use a server DSN when several processes need the store.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from schemas.errors import ConfigError, InfraError
from schemas.settings import Settings

log = logging.getLogger(__name__)

DSN_FORMS = (
    "'' (embedded chdb under run_dir/clickhouse), 'chdb:PATH' (embedded chdb at PATH), "
    "'clickhouse://user:pass@host:8123/db' (HTTP) or 'clickhouses://user:pass@host:8443/db' (HTTPS)"
)
_SERVER_SCHEMES = {"clickhouse": (False, 8123), "clickhouses": (True, 8443)}
_SERVER_OPTIONS = {"connect_timeout": float, "send_receive_timeout": float, "verify": str, "ca_cert": str}

_lock = threading.Lock()
_embedded: dict[str, Client] = {}  # resolved data path -> the process's client on it


@dataclass(frozen=True)
class Target:
    """Where the store lives; ``kind`` is ``"chdb"`` (with ``path``) or ``"server"``."""

    kind: str
    path: Path | None = None
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = field(default="", repr=False)
    database: str = "default"
    secure: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Human form without secrets."""
        if self.kind == "chdb":
            return f"embedded ClickHouse (chdb) at {self.path}"
        scheme = "https" if self.secure else "http"
        return f"ClickHouse server {scheme}://{self.username}@{self.host}:{self.port}/{self.database}"


def _dsn_error(why: str) -> ConfigError:
    return ConfigError(f"DRIFT_CLICKHOUSE_DSN: {why}; accepted: {DSN_FORMS}")


def parse_dsn(dsn: str, default_path: Path) -> Target:
    """Turn a DSN string into a :class:`Target`; errors never echo the password."""
    dsn = dsn.strip()
    if not dsn:
        return Target("chdb", path=Path(default_path))
    if dsn.startswith("chdb:"):
        rest = dsn[len("chdb:") :]
        rest = rest.removeprefix("//")  # chdb:///abs/path as in clickhouse-connect
        if not rest or rest in ("memory", ":memory:"):
            raise _dsn_error("chdb: needs a data directory, e.g. chdb:.run/clickhouse")
        return Target("chdb", path=Path(rest).expanduser())
    scheme = dsn.partition("://")[0].lower() if "://" in dsn else ""
    if scheme not in _SERVER_SCHEMES:
        shown = f"scheme {scheme!r}" if scheme else "a value that is neither empty, chdb:PATH nor a URL"
        raise _dsn_error(f"unsupported {shown}")
    return _parse_server_dsn(dsn, scheme)


def _parse_server_dsn(dsn: str, scheme: str) -> Target:
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        raise _dsn_error(f"malformed {scheme}:// URL ({exc})") from None
    if not parts.hostname:
        raise _dsn_error(f"{scheme}:// URL has no host")
    secure, default_port = _SERVER_SCHEMES[scheme]
    database = unquote(parts.path.strip("/")) or "default"
    if "/" in database:
        raise _dsn_error(f"the URL path must be one database name, got {database!r}")
    return Target(
        "server",
        host=parts.hostname,
        port=port or default_port,
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        secure=secure,
        options=_server_options(parts.query),
    )


def _server_options(query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _SERVER_OPTIONS:
            raise _dsn_error(f"unknown URL option {key!r} (known: {', '.join(sorted(_SERVER_OPTIONS))})")
        try:
            options[key] = _SERVER_OPTIONS[key](value)
        except ValueError:
            raise _dsn_error(f"URL option {key}={value!r} is not a number") from None
    if "verify" in options:
        options["verify"] = options["verify"].lower() not in ("0", "false", "no")
    return options


def open_clickhouse(settings: Settings) -> Client:
    """A clickhouse_connect client for the configured store.

    Embedded stores: the same client is handed back for the same path within a
    process (chdb hosts one engine per process). Server stores: a new client.
    """
    target = parse_dsn(settings.clickhouse_dsn.get_secret_value(), settings.clickhouse_path)
    if target.kind == "chdb":
        return _open_embedded(target.path)
    return _open_server(target)


def _open_embedded(path: Path) -> Client:
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _lock:
        client = _embedded.get(key)
        if client is not None and client.ping():
            return client
        client = _connect_embedded(key)
        _embedded[key] = client
        return client


def _connect_embedded(key: str) -> Client:
    try:
        return clickhouse_connect.get_client(interface="chdb", path=key)
    except Exception as exc:
        message = str(exc)
        if "already initialized with path" in message:
            raise InfraError(
                f"cannot open embedded ClickHouse at {key}: this process already has the embedded "
                f"store at {', '.join(_embedded) or 'another path'} open, and chdb hosts one data "
                f"path per process; close it first (consumers.store.close_clickhouse())"
            ) from exc
        raise InfraError(
            f"cannot open embedded ClickHouse at {key}: {message}. chdb locks its data directory "
            f"for one process: if another process (e.g. 'driftctl run') is using it, stop it or "
            f"point DRIFT_CLICKHOUSE_DSN at a ClickHouse server that all processes share"
        ) from exc


def _open_server(target: Target, settings: dict[str, Any] | None = None) -> Client:
    try:
        return clickhouse_connect.get_client(
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            database=target.database,
            secure=target.secure,
            # no HTTP session: one client may then serve several threads
            autogenerate_session_id=False,
            **({"settings": settings} if settings else {}),
            **target.options,
        )
    except Exception as exc:
        raise InfraError(f"cannot reach {target.describe()}: {type(exc).__name__}: {exc}") from exc


def query_socket_path(settings: Settings) -> Path | None:
    """Where the process owning the embedded store serves read-only SQL; None for servers.

    Beside the data directory (``<path>.sock``) unless ``DRIFT_QUERY_SOCKET`` says
    otherwise, so every process configured with the same store finds the same socket.
    """
    target = parse_dsn(settings.clickhouse_dsn.get_secret_value(), settings.clickhouse_path)
    if target.kind != "chdb":
        return None
    if settings.query_socket is not None:
        return Path(settings.query_socket)
    data = target.path.resolve()
    return data.with_name(data.name + ".sock")


def read_only_settings(settings: Settings) -> dict[str, Any]:
    """Client settings of every monitoring reader (consumers/query_guard.py says why).

    ``readonly=1`` refuses writes, DDL, SYSTEM, settings changes and the table functions
    that reach files or the network; it comes last, since a client applies its settings in
    order and nothing can be set after it (``max_execution_time`` would be frozen at its
    default, not the configured ``DRIFT_QUERY_TIMEOUT_SECONDS``).
    """
    return {
        "max_execution_time": settings.query_timeout_seconds,
        "allow_ddl": 0,
        "allow_introspection_functions": 0,
        "readonly": 1,
    }


def open_readonly_embedded(settings: Settings) -> Client:
    """A second, read-only client on the embedded store this process already has open.

    chdb gives every client its own connection handle on the shared engine, so the
    query socket's reads do not queue behind the sink's client lock, and the read-only
    settings of this handle do not reach the sink's.
    """
    target = parse_dsn(settings.clickhouse_dsn.get_secret_value(), settings.clickhouse_path)
    if target.kind != "chdb":
        raise ConfigError("open_readonly_embedded needs an embedded store (chdb), not a server DSN")
    key = str(target.path.resolve())
    with _lock:
        if key not in _embedded:
            raise InfraError(f"the embedded store at {key} is not open in this process")
        return clickhouse_connect.get_client(interface="chdb", path=key, settings=read_only_settings(settings))


def open_readonly(settings: Settings) -> Client:
    """A read-only client on the configured store: what every monitoring read goes through.

    Embedded: the engine is opened in this process (nobody else holds it) and a read-only
    handle returned; close it when done. Server: a new client with the same settings.
    """
    target = parse_dsn(settings.clickhouse_dsn.get_secret_value(), settings.clickhouse_path)
    if target.kind == "chdb":
        _open_embedded(target.path)
        return open_readonly_embedded(settings)
    return _open_server(target, read_only_settings(settings))


def close_clickhouse(client: Client | None = None) -> None:
    """Close one cached embedded client (or all of them); other clients just close."""
    with _lock:
        cached = [k for k, c in _embedded.items() if client is None or c is client]
        for key in cached:
            _embedded.pop(key).close()
    if client is not None and not cached:
        client.close()


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------


def ddl_files() -> list[tuple[str, str]]:
    """(file name, text) of every DDL file in deploy/clickhouse, in apply order."""
    folder = resources.files("deploy").joinpath("clickhouse")
    files = [p for p in folder.iterdir() if p.name.endswith(".sql")]
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(files, key=lambda p: p.name)]


def split_statements(text: str) -> list[str]:
    """Split SQL text on ';' outside quotes and comments, dropping comment-only parts."""
    statements, current, quote, i = [], [], "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif ch in "'\"`":
            quote = ch
            current.append(ch)
        elif ch == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def apply_schema(client: Client) -> list[str]:
    """Run the DDL files in order; idempotent (CREATE ... IF NOT EXISTS). Returns file names."""
    applied = []
    for name, text in ddl_files():
        for statement in split_statements(text):
            try:
                client.command(statement)
            except Exception as exc:
                raise InfraError(f"applying deploy/clickhouse/{name} failed: {exc}") from exc
        applied.append(name)
        log.debug("applied %s", name)
    return applied


def query(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one SELECT-like statement; returns (column names, rows as tuples)."""
    result = client.query(sql, parameters=parameters)
    return list(result.column_names), [tuple(row) for row in result.result_rows]
