"""Aging: effective priority rises with the wait; the documented bound holds."""

from __future__ import annotations

import heapq

from rota.core.model import PendingJob
from rota.scheduler.aging import aging_bound, by_effective_priority, effective_priority
from rota.scheduler.policy import allocate
from tests.unit.alloc_helpers import node, pending


def test_effective_priority_and_order() -> None:
    old_low = pending("old", priority=0, seq=0, enqueued_at=0.0, aging=10.0)
    new_high = pending("new", priority=5, seq=1, enqueued_at=45.0, aging=10.0)
    assert effective_priority(old_low, 60.0) == 6.0
    assert effective_priority(new_high, 60.0) == 6.5
    assert [j.id for j in by_effective_priority([new_high, old_low], 60.0)] == ["new", "old"]
    # arriving after the old job has aged 5 levels, the priority-5 job comes second
    later_high = pending("later", priority=5, seq=1, enqueued_at=55.0, aging=10.0)
    assert [j.id for j in by_effective_priority([later_high, old_low], 60.0)] == ["old", "later"]
    tie = pending("tie", priority=5, seq=1, enqueued_at=50.0, aging=10.0)
    assert [j.id for j in by_effective_priority([tie, old_low], 60.0)] == ["old", "tie"]
    plain = [pending("a", priority=3), pending("b", priority=9)]
    assert by_effective_priority(plain, 1e9) == plain  # no aging: the order given


def test_aged_job_overtakes_in_placement() -> None:
    nodes = [node("n", slots=1)]
    low = pending("low", priority=0, seq=1, enqueued_at=0.0, aging=1.0)
    early = pending("high", priority=10, seq=5, enqueued_at=5.0, aging=1.0)
    late = pending("high", priority=10, seq=5, enqueued_at=15.0, aging=1.0)
    placed = allocate([early, low], nodes, now=20.0).placement.assignments
    assert [a.job_id for a in placed] == ["high"]
    placed = allocate([late, low], nodes, now=20.0).placement.assignments
    assert [a.job_id for a in placed] == ["low"]  # 10 levels behind, 15 s older


def simulate_flood(aging: float, top: int, horizon: float) -> tuple[float, float]:
    """One slot; a top-priority job arrives every second and runs 1 s (a flood that keeps
    the slot busy for ever); one priority-0 job arrives at t=3. Returns the low job's
    wait and the longest wait of a top-priority job, placing with ``allocate``."""
    arrivals = [(float(t), top, f"hi{t}") for t in range(int(horizon))]
    arrivals.append((3.0, 0, "low"))
    heapq.heapify(arrivals)
    pending_jobs: list[PendingJob] = []
    waits: dict[str, float] = {}
    busy_until = 0.0
    t = 0.0
    seq = 0
    while t < horizon and "low" not in waits:
        while arrivals and arrivals[0][0] <= t:
            at, prio, name = heapq.heappop(arrivals)
            pending_jobs.append(pending(name, priority=prio, seq=seq, enqueued_at=at, aging=aging))
            seq += 1
        if busy_until <= t and pending_jobs:
            ordered = sorted(pending_jobs, key=lambda j: (-j.priority, j.seq))
            placed = allocate(ordered, [node("n", slots=1)], now=t).placement.assignments
            job = next(j for j in pending_jobs if j.id == placed[0].job_id)
            pending_jobs.remove(job)
            waits[job.id] = t - job.enqueued_at
            busy_until = t + 1.0
        t += 0.5
    top_wait = max(w for name, w in waits.items() if name.startswith("hi"))
    return waits.get("low", float("inf")), top_wait


def test_lowest_priority_wait_is_bounded_under_a_flood() -> None:
    low_wait, top_wait = simulate_flood(aging=2.0, top=10, horizon=200.0)
    bound = aging_bound(0, 10, 2.0) + top_wait
    assert low_wait <= bound
    assert low_wait >= aging_bound(0, 10, 2.0) - 1.0  # it did wait for its turn


def test_without_aging_the_lowest_priority_starves() -> None:
    low_wait, _ = simulate_flood(aging=0.0, top=10, horizon=100.0)
    assert low_wait == float("inf")
