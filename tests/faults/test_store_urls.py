"""Store URLs that cannot work fail at once and say why (issue 19): a PostgreSQL role or
database the server refuses, a Redis key prefix with a trailing newline."""

from __future__ import annotations

import time

import pytest

from rota.core.errors import InvalidOption, StoreError
from rota.store import open_store
from tests.stores import PG_DB, PG_HOST, PG_PORT, need_module, need_server


@pytest.mark.parametrize(
    ("user", "db"), [("rota_no_such_role", PG_DB), ("postgres", "rota_no_such_database")]
)
def test_a_refused_postgres_connection_fails_at_once(user: str, db: str) -> None:
    need_server("PostgreSQL", PG_HOST, PG_PORT)
    need_module("rota.store.postgres", "postgres")
    store = open_store(f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{db}?schema=rota_never")
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"PostgreSQL refused the connection.*does not exist"):
        store.list_jobs()
    assert time.monotonic() - started < 10  # not the pool's 15 s of retries
    store.close()


def test_a_redis_prefix_with_a_trailing_newline_is_refused() -> None:
    need_module("rota.store.redis", "redis")
    from rota.store.redis.connection import parse_url

    with pytest.raises(InvalidOption, match="prefix"):
        parse_url("redis://127.0.0.1:6379/0?prefix=app%0A")
    assert parse_url("redis://127.0.0.1:6379/0?prefix=app")[1] == "app"
