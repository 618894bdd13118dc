"""Gangs: all members or none, with Ray's placement strategies."""

from __future__ import annotations

from collections import Counter

import pytest

from rota.core.model import NodeRecord, PendingJob
from rota.scheduler.fit import Room
from rota.scheduler.gangs import place_gang
from rota.scheduler.placement import get_policy
from rota.scheduler.policy import allocate
from tests.unit.alloc_helpers import node, pending


def gang(size: int, strategy: str, gpu: float = 1.0, gang_id: str = "g") -> list[PendingJob]:
    return [
        pending(
            f"{gang_id}{k}",
            seq=k,
            resources={"gpu": gpu},
            gang=gang_id,
            gang_size=size,
            placement=strategy,
        )
        for k in range(size)
    ]


def cluster(free_gpus: list[int]) -> list[NodeRecord]:
    return [
        node(f"n{k}", slots=8, resources={"gpu": 8}, used={"gpu": 8 - free}, running=8 - free)
        for k, free in enumerate(free_gpus)
    ]


def nodes_used(strategy: str, free: list[int], size: int = 4) -> Counter[str] | None:
    d = allocate(gang(size, strategy), cluster(free))
    if not d.placement.assignments:
        return None
    assert len(d.placement.assignments) == size
    return Counter(a.node_id for a in d.placement.assignments)


def test_strategies() -> None:
    assert nodes_used("strict_pack", [8, 8, 8]) == {"n0": 4}
    assert nodes_used("strict_pack", [3, 3, 3]) is None
    assert nodes_used("pack", [3, 3, 3]) == {"n0": 3, "n1": 1}
    assert nodes_used("strict_spread", [8, 8, 8]) is None  # 3 nodes for 4 members
    assert nodes_used("spread", [8, 8, 8]) == {"n0": 2, "n1": 1, "n2": 1}


def test_strict_spread_uses_distinct_nodes() -> None:
    used = nodes_used("strict_spread", [1, 1, 1, 1, 8])
    assert used is not None and set(used.values()) == {1} and len(used) == 4


def test_all_or_nothing_leaves_room_to_others() -> None:
    # 6 GPUs free, an 8-member gang first, then single jobs: the gang takes nothing
    jobs = [
        *gang(8, "pack"),
        *[pending(f"s{k}", seq=10 + k, resources={"gpu": 1}) for k in range(6)],
    ]
    d = allocate(jobs, cluster([3, 3]))
    assert sorted(a.job_id for a in d.placement.assignments) == [f"s{k}" for k in range(6)]
    assert d.placement.waiting == 8
    # members placed one by one (today, without gang=) would hold 6 GPUs and run nothing
    loose = [pending(f"g{k}", seq=k, resources={"gpu": 1}) for k in range(8)]
    assert len(allocate(loose, cluster([3, 3])).placement.assignments) == 6


def test_incomplete_gang_waits() -> None:
    d = allocate(gang(4, "pack")[:3], cluster([8]))
    assert not d.placement.assignments
    assert d.reasons["g0"] == "gang g: 3 of 4 members pending"


def test_room_is_unchanged_when_a_gang_fails() -> None:
    room = Room(cluster([3, 2]), get_policy("least_loaded"))
    before = (list(room.in_flight), [dict(u) for u in room.used])
    assert place_gang(gang(6, "pack"), room, "pack") is None
    assert (room.in_flight, room.used) == before
    with pytest.raises(ValueError):
        place_gang(gang(1, "pack"), room, "diagonal")
