"""The ready monitoring queries, one ``deploy/clickhouse/queries/<name>.sql`` file each.

A file starts with comment lines: ``-- title: ...``, a description, and one
``-- param: NAME Type = default`` line per ClickHouse query parameter it uses as
``{NAME:Type}``. The same files serve ``driftctl query --named NAME``, the HTML report
and the README, so a question has one answer everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from schemas.errors import ConfigError, UnknownKeyError

_PARAM = re.compile(r"^--\s*param:\s*(\w+)\s+([\w()]+)\s*=\s*(.*?)\s*$")
_INT_TYPES = {"UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16", "Int32", "Int64"}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str

    def convert(self, text: str) -> int | float | str:
        """The value as the type ClickHouse expects; a bad value names the parameter."""
        try:
            if self.type in _INT_TYPES:
                return int(text)
            if self.type.startswith("Float"):
                return float(text)
        except ValueError:
            raise ConfigError(f"query parameter {self.name} must be {self.type}, got {text!r}") from None
        return text


@dataclass(frozen=True)
class NamedQuery:
    name: str
    title: str
    description: str
    sql: str
    params: tuple[Param, ...] = field(default=())

    def parameters(self, overrides: dict[str, str] | None = None) -> dict[str, int | float | str]:
        """Defaults, replaced by ``overrides`` (text, e.g. from ``--param k=v``)."""
        overrides = dict(overrides or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise UnknownKeyError(f"parameter of query {self.name!r}", ", ".join(unknown), list(known))
        return {n: p.convert(overrides.get(n, p.default)) for n, p in known.items()}


def parse_query(name: str, text: str) -> NamedQuery:
    title, description, params = name, [], []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if m := _PARAM.match(line):
            params.append(Param(*m.groups()))
        elif line.startswith("-- title:"):
            title = line.partition(":")[2].strip()
        else:
            description.append(line[2:].strip())
    return NamedQuery(name, title, " ".join(d for d in description if d), text.strip(), tuple(params))


@cache
def named_queries() -> dict[str, NamedQuery]:
    """Every ready query by name (the file name without ``.sql``)."""
    folder = resources.files("deploy").joinpath("clickhouse", "queries")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return {p.name[:-4]: parse_query(p.name[:-4], p.read_text(encoding="utf-8")) for p in files}


def get_query(name: str) -> NamedQuery:
    queries = named_queries()
    if name not in queries:
        raise UnknownKeyError("ready query", name, list(queries))
    return queries[name]


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` from the command line into a dict."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param expects NAME=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out
