"""What monitoring SQL may do, checked on every read path (query socket, direct store, server).

Two layers, the engine's first:

* the reading client runs with ``consumers.store.read_only_settings``: ``readonly=1`` makes ClickHouse
  refuse writes, DDL, ``SYSTEM``, ``SET``/``SETTINGS`` changes (so ``max_execution_time``
  stays the configured ``DRIFT_QUERY_TIMEOUT_SECONDS``) and every table function that
  reaches files or the network (``file``, ``url``, ``s3``, ``mysql``, ``remote``, ...);
  ``allow_ddl=0`` and ``allow_introspection_functions=0`` too. ``readonly`` comes last: a
  client applies its settings in order and nothing can be set after it.
* :func:`check_statement` parses the statement with the engine's own parser
  (``EXPLAIN AST``) and refuses what ``readonly`` lets through: ``INTO OUTFILE`` (chdb
  writes the file in-process), the scalar ``file()`` function (reads any file), ``DESCRIBE``
  of a table function (schema inference reads the file), and table functions outside a small
  allow-list. Before that, a statement must be one statement starting with a read keyword.

The embedded engine has one built-in user (``default``, users.xml, no access storage), so
its grants (``SHOW GRANTS``) cannot be narrowed in-engine; ``readonly=1`` is what binds it
(``SELECT getSetting('readonly')`` answers 1 on every read path).
"""

from __future__ import annotations

from typing import Any

from consumers.store import read_only_settings, split_statements
from schemas.errors import DriftError

READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
# local, side-effect-free row sources; everything else that follows FROM is refused
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries", "values", "merge", "null",
})  # fmt: skip
DENIED_FUNCTIONS = frozenset({"file", "catboostEvaluate", "modelEvaluate", "getClientHTTPHeader"})
_QUERY_NODES = ("Query", "Explain", "ShowTables")  # node kinds whose direct Literal child is an INTO OUTFILE target


class QueryError(DriftError):
    """The SQL was refused or failed; the message is ClickHouse's or says what is allowed."""


def check_read_only(sql: str) -> None:
    """One statement, starting like a read (a clear message before the engine is asked).

    One statement per request: chdb leaves the rest of a multi-statement result on the
    connection, which would garble the next answer.
    """
    if len(split_statements(sql)) > 1:
        raise QueryError("one statement per query, please (found a ';' between statements)")
    text = sql.strip()
    while text.startswith(("--", "/*")):  # leading comments
        end = text.find("\n") if text.startswith("--") else text.find("*/") + 1
        text = "" if end <= 0 else text[end + 1 :].lstrip()
    first = text.split(None, 1)[0].upper().rstrip("(") if text else ""
    if first not in READ_STATEMENTS:
        raise QueryError(
            f"only read-only statements are served on the monitoring path "
            f"({', '.join(READ_STATEMENTS)}); got {first or 'an empty statement'!r}"
        )


def ast_nodes(lines: list[str]) -> list[tuple[int, str, int | None]]:
    """``EXPLAIN AST`` lines as (depth, node, parent index): depth is the leading spaces."""
    nodes: list[tuple[int, str, int | None]] = []
    stack: list[int] = []  # indexes of the open ancestors
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        node = line.strip()
        while stack and nodes[stack[-1]][0] >= depth:
            stack.pop()
        nodes.append((depth, node, stack[-1] if stack else None))
        stack.append(len(nodes) - 1)
    return nodes


def _function_name(node: str) -> str | None:
    if not node.startswith("Function "):
        return None
    return node.split()[1]


def refusal(lines: list[str]) -> str | None:
    """Why the parsed statement is refused, or None. Pure: unit-tested on engine output."""
    nodes = ast_nodes(lines)
    for depth, node, parent in nodes:
        parent_node = nodes[parent][1] if parent is not None else ""
        name = _function_name(node)
        if name is not None and parent_node.startswith("TableExpression"):
            if name not in ALLOWED_TABLE_FUNCTIONS:
                return (
                    f"table function {name}() is not allowed on the monitoring path (it reaches files, the "
                    f"network or other servers); allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
                )
        elif name in DENIED_FUNCTIONS:
            return f"function {name}() is not allowed on the monitoring path (it reads files or client data)"
        kind = parent_node.split(" ", 1)[0]
        if node.startswith("Literal ") and kind.endswith(_QUERY_NODES) and kind != "SelectQuery":
            return "INTO OUTFILE is not allowed on the monitoring path (it writes files as the store's user)"
    return None


def check_statement(client: Any, sql: str, parameters: dict[str, Any] | None = None) -> None:
    """Refuse ``sql`` unless it is one read that touches only the store (see the module doc).

    ``client`` must be a read-only client (``read_only_settings``): the engine parses the
    statement for us, and refuses itself what it can.
    """
    check_read_only(sql)
    try:
        result = client.query(f"EXPLAIN AST {sql}", parameters=parameters)
        lines = [row[0] for row in result.result_rows]
    except Exception as exc:  # the engine's parse or readonly error goes back as is
        raise QueryError(str(exc).strip()) from exc
    reason = refusal(lines)
    if reason is not None:
        raise QueryError(reason)


__all__ = ["QueryError", "check_read_only", "check_statement", "read_only_settings", "refusal"]
