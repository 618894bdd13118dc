"""Conservative backfill: reservations on the nodes that free soonest; small jobs only
where they cannot delay them."""

from __future__ import annotations

import math

from rota.core.model import NodeRecord, RunningJob
from rota.scheduler.backfill import Timeline
from rota.scheduler.fit import Room
from rota.scheduler.placement import get_policy
from rota.scheduler.policy import AllocationConfig, allocate
from tests.unit.alloc_helpers import busy, pending, run

BACKFILL = AllocationConfig(backfill=True)


def two_nodes() -> tuple[list[NodeRecord], list[RunningJob]]:
    """n0: 4 CPUs, 3 busy until t=100; n1: 4 CPUs, 2 busy until t=50."""
    r0 = [run(f"a{k}", "n0", resources={"cpu": 1}, started_at=0.0, timeout=100.0) for k in range(3)]
    r1 = [run(f"b{k}", "n1", resources={"cpu": 1}, started_at=0.0, timeout=50.0) for k in range(2)]
    nodes = [
        busy("n0", r0, slots=8, resources={"cpu": 4}),
        busy("n1", r1, slots=8, resources={"cpu": 4}),
    ]
    return nodes, r0 + r1


def test_big_job_reserves_the_node_that_frees_soonest() -> None:
    nodes, running = two_nodes()
    big = pending("big", seq=0, resources={"cpu": 4}, timeout=60.0)
    d = allocate([big], nodes, running=running, now=10.0, config=BACKFILL)
    [r] = d.reservations
    assert (r.job_ids, r.nodes, r.start, r.end) == (("big",), ("n1",), 50.0, 110.0)
    assert d.reasons["big"] == "reserved on n1 in 40 s"


def test_small_jobs_backfill_only_when_they_cannot_delay_the_reservation() -> None:
    nodes, running = two_nodes()
    jobs = [
        pending("big", seq=0, resources={"cpu": 4}, timeout=60.0),
        pending("short", seq=1, resources={"cpu": 2}, timeout=45.0),  # ends at 55 > 50
        pending("long", seq=2, resources={"cpu": 1}, timeout=500.0),
        pending("tiny", seq=3, resources={"cpu": 1}, timeout=30.0),  # ends at 40 < 50
        pending("forever", seq=4, resources={"cpu": 1}),  # no timeout: may run for ever
    ]
    d = allocate(jobs, nodes, running=running, now=10.0, config=BACKFILL)
    placed = {a.job_id: a.node_id for a in d.placement.assignments}
    # tiny ends before the reservation on n1 starts; long goes beside it, on n0 (no
    # reservation there); short and forever would delay the big job: they wait
    assert placed == {"long": "n0", "tiny": "n1"}
    # today (no backfill): short takes n1's free CPUs and the big job waits longer
    today = allocate(jobs, nodes, running=running, now=10.0)
    assert {a.job_id: a.node_id for a in today.placement.assignments} == {
        "short": "n1",
        "long": "n0",
    }


def test_a_big_job_is_never_delayed_by_later_small_jobs() -> None:
    """Fill random small jobs after a blocked big one; its reservation's start never
    moves later than it was with no small jobs at all."""
    import random

    rng = random.Random(7)
    for _ in range(40):
        nodes, running = two_nodes()
        big = pending("big", seq=0, resources={"cpu": 4}, timeout=60.0)
        alone = allocate([big], nodes, running=running, now=10.0, config=BACKFILL)
        smalls = [
            pending(
                f"s{k}",
                seq=1 + k,
                resources={"cpu": rng.choice((1, 2))},
                timeout=rng.choice((5.0, 20.0, 35.0, 45.0, 200.0, None)),
            )
            for k in range(rng.randrange(1, 8))
        ]
        d = allocate([big, *smalls], nodes, running=running, now=10.0, config=BACKFILL)
        # play the cycle forward: what is placed now runs its worst case
        placed = {a.job_id: a.node_id for a in d.placement.assignments}
        by_id = {j.id: j for j in smalls}
        later = [
            run(j, n, resources=by_id[j].resources, started_at=10.0, timeout=by_id[j].timeout)
            for j, n in placed.items()
        ]
        room = Room(nodes, get_policy("least_loaded"))
        for r in later:
            room.take(room.index[r.node_id], by_id[r.id])
        again = Timeline(room, running + later, 10.0).reserve([big], "pack", 10.0)
        assert again is not None and again.start <= alone.reservations[0].start


def test_gang_reservation_and_no_timeout() -> None:
    nodes, running = two_nodes()
    members = [
        pending(
            f"g{k}",
            seq=k,
            resources={"cpu": 3},
            timeout=10.0,
            gang="g",
            gang_size=2,
            placement="strict_spread",
        )
        for k in range(2)
    ]
    d = allocate(members, nodes, running=running, now=10.0, config=BACKFILL)
    [r] = d.reservations
    assert r.start == 100.0 and sorted(r.nodes) == ["n0", "n1"]
    endless = pending("endless", resources={"cpu": 4})
    [r] = allocate([endless], nodes, running=running, now=10.0, config=BACKFILL).reservations
    assert r.start == 50.0 and r.end == math.inf


def test_only_large_jobs_get_reservations() -> None:
    _nodes, running = two_nodes()
    small = pending("small", resources={"cpu": 1}, timeout=10.0)  # 1/4 of a node: not large
    busy_nodes = [
        busy(
            "n0",
            [*running[:3], run("f", "n0", resources={"cpu": 1})],
            slots=8,
            resources={"cpu": 4},
        ),
        busy(
            "n1",
            [*running[3:], run("g", "n1", resources={"cpu": 2})],
            slots=8,
            resources={"cpu": 4},
        ),
    ]
    d = allocate([small], busy_nodes, running=running, now=10.0, config=BACKFILL)
    assert d.reservations == [] and d.reasons["small"] == "no room now"
    eager = AllocationConfig(backfill=True, reserve_min_share=0.25)
    d = allocate([small], busy_nodes, running=running, now=10.0, config=eager)
    assert len(d.reservations) == 1
