"""The zombie scenario of ``tests/acceptance/test_zombie.py`` (SQLite there), on Redis: a
worker frozen (SIGSTOP) past the failure timeout is declared dead, its job re-runs
elsewhere, and its late completion is refused by the fencing token."""

from __future__ import annotations

import pytest

from tests.acceptance.apps import basic
from tests.acceptance.conftest import Fleet
from tests.acceptance.test_zombie import test_frozen_worker_is_fenced_out as zombie_scenario

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["redis"])
def test_frozen_worker_is_fenced_out_on_redis(fleet: Fleet, url: str) -> None:
    client = basic.build(url)  # the acceptance tasks, which the fleet's workers load
    try:
        zombie_scenario(fleet, client)
    finally:
        client.close()
