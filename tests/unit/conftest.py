"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumers.store import apply_schema, close_clickhouse, open_clickhouse
from schemas.settings import load_settings


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """An embedded ClickHouse store with the schema applied, one per test module.

    chdb hosts one data path per process, so the store is closed at the module's end and the
    next module opens its own.
    """
    client = open_clickhouse(load_settings(run_dir=tmp_path_factory.mktemp("store")))
    apply_schema(client)
    yield client
    close_clickhouse(client)
