"""Read-only SQL over a local Unix socket, served by the process that owns the embedded store.

chdb locks its data directory for one process, and while ``driftctl run`` runs that is
the sink. So the sink also serves read-only queries: a threaded Unix-socket server
(``<data path>.sock``, mode 0600) answering newline-delimited JSON:

    request:  {"sql": "SELECT ...", "parameters": {"name": value}}
    response: {"ok": true, "columns": [...], "types": [...], "rows": [[...], ...], "truncated": false}
              {"ok": false, "error": "...", "kind": "refused" | "query" | "request"}

Read-only is enforced by the engine and checked on the parsed statement
(``consumers/query_guard.py``): the server's own chdb client runs with ``readonly=1``
(no write, DDL, SYSTEM, settings change or file/network table function, whatever the
text), and ``INTO OUTFILE``, ``file()`` and table functions outside an allow-list are
refused from the engine's own ``EXPLAIN AST``. The direct-store and server paths of
:func:`open_reader` apply the same two layers.
Values JSON cannot carry (datetimes, decimals, bytes, maps, non-finite floats) travel
tagged (``{"$t": "datetime", "v": "..."}``) and are revived by the client, so callers get
the same Python values as from a direct query.

:func:`open_reader` is what commands use: a server DSN goes to the server; an embedded
store goes through the socket when a live process serves it, else is opened directly.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import socket
import socketserver
import threading
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from consumers.query_guard import QueryError, check_statement
from consumers.store import open_readonly, open_readonly_embedded, parse_dsn, query, query_socket_path
from runtime import metrics
from schemas.errors import ConfigError, DriftError, InfraError
from schemas.settings import Settings

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
UNIX_PATH_MAX = 107


# --------------------------------------------------------------------------------------
# Values <-> JSON
# --------------------------------------------------------------------------------------


def to_wire(value: Any) -> Any:
    """A query value as JSON-safe data, tagging what JSON has no type for."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$t": "float", "v": repr(value)}
    if isinstance(value, datetime):
        return {"$t": "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {"$t": "date", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$t": "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$t": "uuid", "v": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"$t": "bytes", "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {"$t": "map", "v": [[to_wire(k), to_wire(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return str(value)  # IP addresses and the like: their text form


_REVIVE = {
    "float": float,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
}


def from_wire(value: Any) -> Any:
    """Inverse of :func:`to_wire` (lists come back as lists)."""
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        tag, raw = value.get("$t"), value.get("v")
        if tag == "map":
            return {_hashable(from_wire(k)): from_wire(v) for k, v in raw}
        if tag in _REVIVE:
            return _REVIVE[tag](raw)
        raise InfraError(f"query socket sent an unknown value tag {tag!r}")
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_REQUEST_BYTES:
                self._send({"ok": False, "kind": "request", "error": f"request over {MAX_REQUEST_BYTES} bytes"})
                return
            if line.strip():
                self._send(self.server.owner.answer(line))

    def _send(self, response: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(response, allow_nan=False).encode() + b"\n")
        self.wfile.flush()


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False
    owner: QueryServer


class QueryServer:
    """Serves read-only SQL on ``path`` with ``client`` (a read-only clickhouse_connect client)."""

    def __init__(self, client: Any, path: Path, max_rows: int = 100_000):
        self.client = client
        self.path = Path(path)
        self.max_rows = max_rows
        self.served = 0
        self.failed = 0
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def answer(self, line: bytes) -> dict[str, Any]:
        """One request line to one response object; never raises."""
        try:
            request = json.loads(line)
            sql = request["sql"]
            parameters = request.get("parameters") or None
            if not isinstance(sql, str) or not (parameters is None or isinstance(parameters, dict)):
                raise TypeError("sql must be a string and parameters an object")
        except (ValueError, KeyError, TypeError) as exc:
            return self._failed("request", f"bad request: {exc}")
        try:
            check_statement(self.client, sql, parameters)
        except QueryError as exc:
            return self._failed("refused", str(exc))
        try:
            result = self.client.query(sql, parameters=parameters)
            rows = result.result_rows  # streamed: errors may surface only here
        except Exception as exc:  # noqa: BLE001 - every engine error goes back to the caller
            return self._failed("query", str(exc))
        self.served += 1
        metrics.QUERY_REQUESTS.labels("ok").inc()
        return {
            "ok": True,
            "columns": list(result.column_names),
            "types": [t.name for t in result.column_types],
            "rows": [[to_wire(v) for v in row] for row in rows[: self.max_rows]],
            "truncated": len(rows) > self.max_rows,
        }

    def _failed(self, kind: str, error: str) -> dict[str, Any]:
        self.failed += 1
        metrics.QUERY_REQUESTS.labels(kind).inc()
        return {"ok": False, "kind": kind, "error": error}

    def start(self) -> QueryServer:
        if len(os.fsencode(self.path)) > UNIX_PATH_MAX:
            raise ConfigError(
                f"query socket path {self.path} is longer than {UNIX_PATH_MAX} bytes (a Unix socket limit); "
                f"set DRIFT_QUERY_SOCKET to a shorter path"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if socket_alive(self.path):
                raise InfraError(f"another process already serves queries on {self.path}")
            self.path.unlink()  # left by a process that died
        old_umask = os.umask(0o177)  # the socket is born 0600: only this user may query
        try:
            self._server = _UnixServer(str(self.path), _Handler)
        finally:
            os.umask(old_umask)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="query-socket", daemon=True)
        self._thread.start()
        log.info("serving read-only SQL on %s", self.path)
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        log.info("query socket %s closed (%d served, %d refused or failed)", self.path, self.served, self.failed)


def start_query_server(settings: Settings) -> QueryServer | None:
    """Start serving the embedded store this process has open; None (and a log line) if not possible."""
    path = query_socket_path(settings)
    if path is None:
        return None  # a server store: every process reaches it directly
    client = None
    try:
        client = open_readonly_embedded(settings)
        return QueryServer(client, path, settings.query_max_rows).start()
    except (DriftError, OSError) as exc:  # e.g. the socket cannot be bound: the sink runs on without it
        if client is not None:
            client.close()
        log.error("no query socket (driftctl query will not work while this runs): %s", exc)
        return None


def stop_query_server(server: QueryServer | None) -> None:
    if server is not None:
        server.close()
        server.client.close()


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------


def socket_alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2.0)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class SocketReader:
    """Queries through a live query socket."""

    def __init__(self, path: Path, timeout: float = 300.0):
        self.path = Path(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(self.path))
        except OSError:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rwb")
        self.truncated = False

    def describe(self) -> str:
        return f"embedded ClickHouse via the query socket {self.path}"

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        request = {"sql": sql, "parameters": parameters or {}}
        try:
            self._file.write(json.dumps(request).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        except OSError as exc:
            raise InfraError(f"query socket {self.path} failed: {exc}") from exc
        if not line:
            raise InfraError(f"query socket {self.path} closed the connection (did the sink stop?)")
        response = json.loads(line)
        if not response.get("ok"):
            raise QueryError(response.get("error", "query failed"))
        self.truncated = bool(response.get("truncated"))
        rows = [tuple(from_wire(v) for v in row) for row in response["rows"]]
        return list(response["columns"]), rows

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class ClientReader:
    """Queries with a clickhouse_connect client (a server, or the embedded store opened here)."""

    def __init__(self, client: Any, description: str):
        self.client = client
        self.description = description
        self.truncated = False

    def describe(self) -> str:
        return self.description

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        check_statement(self.client, sql, parameters)  # the socket's checks, on this path too
        try:
            return query(self.client, sql, parameters)
        except Exception as exc:
            if type(exc).__module__.startswith("clickhouse_connect"):
                raise QueryError(str(exc)) from exc
            raise

    def close(self) -> None:
        self.client.close()  # its own read-only handle; an embedded engine stays open for the process


def open_reader(settings: Settings) -> SocketReader | ClientReader:
    """The way to read the configured store from this process, see the module doc."""
    target = parse_dsn(settings.clickhouse_dsn.get_secret_value(), settings.clickhouse_path)
    path = query_socket_path(settings)
    if path is not None and path.exists():
        try:
            return SocketReader(path)
        except OSError as exc:
            log.info("query socket %s not answering (%s); opening the store directly", path, exc)
    return ClientReader(open_readonly(settings), target.describe() + " (read-only)")
