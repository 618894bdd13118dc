"""Fixtures of the PostgreSQL store tests: a fresh schema per test (dropped afterwards), a
store on it, and an admin connection to its schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stores import store_url

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with store_url("postgres", tmp_path) as u:
        yield u


@pytest.fixture
def store(url: str) -> Iterator[Any]:
    from rota.store.postgres.store import PostgresStore

    s = PostgresStore(url)
    yield s
    s.close()


@pytest.fixture
def admin(store: Any) -> Iterator[Any]:
    """A plain autocommit connection with the store's schema on its search_path."""
    store.migrate()
    with psycopg.connect(store.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
        yield conn
