"""Short forms of the partition scenarios (the full ones: ``python -m bench.partitions``):
a worker host cut off silently while it runs jobs, and the scheduler leader's host cut
off, on Redis and on PostgreSQL, with real ``rota`` processes in network namespaces."""

from __future__ import annotations

import pytest

from rota import Rota
from tests.hosts import scenarios
from tests.hosts.fleet import HostFleet

STORES = ["redis", "postgres"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", STORES)
def test_worker_host_partitioned(fleet: HostFleet, client: Rota, kind: str) -> None:
    result = scenarios.worker_partition(
        fleet, client, kind, workers=["w1", "w2", "w3"], jobs=300, ms=300, concurrency=8,
        hold=5.0,
    )  # fmt: skip
    assert result.lost == 0
    assert result.duplicates_accepted == 0
    assert result.late_refused >= 1, "the healed node reported nothing late"
    assert result.replace_s, "none of the cut node's jobs ran elsewhere"
    # Generous: the figure against failure timeout + 1 s comes from bench.partitions.
    assert max(result.replace_s) < 15.0, result.replace_s


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", STORES)
def test_leader_host_partitioned(fleet: HostFleet, client: Rota, kind: str) -> None:
    result = scenarios.leader_partition(
        fleet, client, kind, workers=["w1", "w2"], jobs=300, ms=200, concurrency=8, hold=5.0
    )
    assert result.lost == 0
    assert result.duplicates_accepted == 0
    assert result.late_refused >= 1, "the old leader never noticed it was fenced out"
    assert result.replace_s[0] < 15.0, result.replace_s
