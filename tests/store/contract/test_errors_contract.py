"""Every store raises only rota errors: a store whose file or server is unusable raises
``StoreError`` (the driver's exception kept as its cause), never the driver's own class."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from rota.core.errors import StoreError
from rota.store import Store, open_store
from tests.stores import STORE_KINDS, need_module


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def unusable_store(kind: str, tmp_path: Path) -> Store:
    """A store of ``kind`` that cannot work: a file that is not a database, or a server
    address nothing answers on (with short retries, to keep the test quick)."""
    if kind == "sqlite":
        path = tmp_path / "not-a-database.db"
        path.write_bytes(b"this is not an SQLite database" * 100)
        return open_store(f"sqlite:///{path}")
    if kind == "redis":
        need_module("rota.store.redis", "redis")
        from rota.store.redis.store import RedisStore

        return RedisStore(f"redis://127.0.0.1:{closed_port()}/0", retries=1)
    need_module("rota.store.postgres", "postgres")
    from rota.store.postgres.store import PostgresStore

    return PostgresStore(f"postgresql://postgres@127.0.0.1:{closed_port()}/test", timeout=2.0)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_an_unusable_store_raises_store_error(kind: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError) as raised:
        store = unusable_store(kind, tmp_path)
        try:
            store.now()
        finally:
            store.close()
    assert raised.value.__cause__ is not None  # the driver's error is kept as the cause
    assert not isinstance(raised.value, sqlite3.Error)


def test_sqlite_errors_name_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    with pytest.raises(StoreError, match=r"a-directory\.db") as raised:
        open_store(f"sqlite:///{directory}")
    assert isinstance(raised.value.__cause__, sqlite3.Error)


def test_a_sqlite_store_closed_under_its_caller_raises_store_error(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'rota.db'}")
    store.close()
    with pytest.raises(StoreError) as raised:
        store.list_jobs()
    assert isinstance(raised.value.__cause__, sqlite3.ProgrammingError)
