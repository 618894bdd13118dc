"""Factories for fresh, isolated stores of every kind, shared by the contract suite and
the acceptance tests. A store whose server is down is skipped with a clear reason, unless
``ROTA_REQUIRE_SERVICES=1`` (set by ``.ci/run``), where it fails."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("ROTA_TEST_REDIS_PORT", "6379"))
PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("ROTA_TEST_PG_PORT", "5432"))
PG_DB = os.environ.get("ROTA_TEST_PG_DB", "test")
STORE_KINDS = ("sqlite", "redis", "postgres")
# Kinds that start servers of their own (tests/ha/servers.py); the contract suite runs them.
CLUSTER_KINDS = ("redis-cluster",)


def require_services() -> bool:
    return os.environ.get("ROTA_REQUIRE_SERVICES") == "1"


def server_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test for ``reason``; under ROTA_REQUIRE_SERVICES=1 (CI) fail it instead."""
    if require_services():
        pytest.fail(f"{reason}, and ROTA_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


def need_server(name: str, host: str, port: int) -> None:
    """Skip (or fail under ROTA_REQUIRE_SERVICES=1) when the server does not answer."""
    if not server_up(host, port):
        skip_or_fail(f"{name} is not answering on {host}:{port}")


def need_module(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        skip_or_fail(f"rota.{module.rsplit('.', 1)[-1]} needs 'pip install rota[{extra}]'")


@contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A URL naming a fresh, empty store of ``kind``; its data is removed afterwards."""
    tag = uuid.uuid4().hex[:12]
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'rota-{tag}.db'}"
    elif kind == "redis":
        need_server("Redis", REDIS_HOST, REDIS_PORT)
        need_module("rota.store.redis", "redis")
        prefix = f"rota-test-{tag}"
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    elif kind == "postgres":
        need_server("PostgreSQL", PG_HOST, PG_PORT)
        need_module("rota.store.postgres", "postgres")
        schema = f"rota_test_{tag}"
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}?schema={schema}"
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}", autocommit=True
        ) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    elif kind == "redis-cluster":
        need_module("rota.store.redis", "redis")
        from tests.ha.servers import shared_cluster

        cluster = shared_cluster()
        prefix = f"rota-test-{tag}"
        yield cluster.url(prefix)
        client = cluster.client_for(prefix)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    else:  # pragma: no cover
        raise ValueError(kind)
