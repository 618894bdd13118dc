"""Fixtures of the Redis store tests: a fresh prefix per test (its keys removed afterwards),
further connections to it, and a raw client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stores import REDIS_HOST, REDIS_PORT, store_url

pytest.importorskip("redis")

import redis

from rota.store.redis.store import RedisStore


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with store_url("redis", tmp_path) as u:
        yield u


@pytest.fixture
def connect(url: str) -> Iterator[Callable[..., RedisStore]]:
    opened: list[RedisStore] = []

    def factory(u: str | None = None, **kw: Any) -> RedisStore:
        s = RedisStore(u or url, **kw)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def store(connect: Callable[..., RedisStore]) -> RedisStore:
    return connect()


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    yield r
    r.close()
