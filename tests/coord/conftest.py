"""Fixtures of the coordinator contract: a private ZooKeeper per module, a fresh root per
test, and a coordinator URL for each kind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rota.store import Store, open_store
from tests.stores import need_module, store_url
from tests.zookeeper import ZooKeeperServer, zookeeper_server

COORDINATORS = ("store", "zookeeper")


@pytest.fixture(scope="module")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    need_module("kazoo", "zookeeper")
    with zookeeper_server(tmp_path_factory.mktemp("zookeeper")) as server:
        yield server


@pytest.fixture
def zk_url(zk_server: ZooKeeperServer) -> str:
    """A ZooKeeper coordinator URL with a root of this test's own."""
    return zk_server.url(f"/rota-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=COORDINATORS)
def coordinator_url(request: pytest.FixtureRequest) -> str:
    if request.param == "store":
        return "store"
    return str(request.getfixturevalue("zk_url"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with store_url("sqlite", tmp_path) as url:
        s = open_store(url)
        yield s
        s.close()
