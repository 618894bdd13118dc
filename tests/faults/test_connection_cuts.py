"""Connection cuts during a drain (short form of ``python -m bench.faults``'s scenario):
PostgreSQL backends terminated, Redis clients killed, every second or so. 0 jobs lost,
0 run twice, 0 false lease losses (see ``cuts.py``)."""

from __future__ import annotations

import pytest

from rota import Rota
from tests.acceptance.conftest import Fleet
from tests.faults.cuts import connection_cuts

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_connections_cut_during_a_drain(fleet: Fleet, client: Rota) -> None:
    got = connection_cuts(fleet, client, jobs=400, every=1.0, ms=100, workers=2, concurrency=4)
    assert got.cuts >= 3 and got.connections_cut > 0, got
    assert (got.lost, got.doubled, got.false_lease_losses) == (0, 0, 0), got
