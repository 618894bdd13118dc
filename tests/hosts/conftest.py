"""Fixtures for the hosts suite: a private network of namespaces (removed even when a test
fails), a store reached over its bridge (a private Redis bound to the bridge address, or
the machine's PostgreSQL through socat), a :class:`HostFleet` on it and a client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rota import Rota
from tests.acceptance.conftest import (  # noqa: F401  (fixtures and the report hook)
    FLEET_KEY,
    _no_ambient_store,
    pytest_runtest_makereport,
)
from tests.hosts import apps
from tests.hosts.fleet import HostFleet
from tests.hosts.netns import NetnsUnavailable, Network
from tests.hosts.services import PG_HOST, PG_PORT, postgres_via_socat, private_redis
from tests.stores import need_module, need_server, skip_or_fail

HOSTS = ["w1", "w2", "w3", "s1", "s2"]


@pytest.fixture
def network() -> Iterator[Network]:
    try:
        net = Network.create(HOSTS)
    except NetnsUnavailable as exc:
        skip_or_fail(f"hosts as network namespaces are not available: {exc}")
    try:
        yield net
    finally:
        net.destroy()


@pytest.fixture
def kind() -> str:
    return "redis"


@pytest.fixture
def url(kind: str, network: Network, tmp_path: Path) -> Iterator[str]:
    if kind == "redis":
        need_module("rota.store.redis", "redis")
        try:
            with private_redis(network, tmp_path) as base:
                yield f"{base}?prefix=rota-hosts-{uuid.uuid4().hex[:8]}"
        except FileNotFoundError:
            skip_or_fail("redis-server is not installed")
    elif kind == "postgres":
        need_module("rota.store.postgres", "postgres")
        need_server("PostgreSQL", PG_HOST, PG_PORT)
        with postgres_via_socat(network, tmp_path) as u:
            yield u
    else:  # pragma: no cover
        raise ValueError(kind)


@pytest.fixture
def fleet(
    url: str, network: Network, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[HostFleet]:
    f = HostFleet(url, tmp_path, net=network)
    request.node.stash[FLEET_KEY] = f
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def client(url: str) -> Iterator[Rota]:
    app = apps.build(url)
    yield app
    app.close()
