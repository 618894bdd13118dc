from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rota.store import Store, open_store
from tests.stores import CLUSTER_KINDS, STORE_KINDS, store_url


@pytest.fixture(params=(*STORE_KINDS, *CLUSTER_KINDS))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as u:
        yield u


@pytest.fixture
def connect(url: str) -> Iterator[Callable[[], Store]]:
    """Open further connections to the same store (as other processes would)."""
    opened: list[Store] = []

    def factory() -> Store:
        s = open_store(url)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def store(connect: Callable[[], Store]) -> Store:
    return connect()
