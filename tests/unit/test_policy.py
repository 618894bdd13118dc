"""The allocation step: with the defaults it decides exactly what ``place`` decides, and
its one-job-at-a-time engine mirrors ``place``'s filter and ranking."""

from __future__ import annotations

import dataclasses
import random

import pytest

from rota.core.model import AllocSpec, NodeRecord, NodeSpec, NodeState, PendingJob
from rota.scheduler.fairshare import Share
from rota.scheduler.placement import POLICIES, place
from rota.scheduler.policy import AllocationConfig, allocate, engaged
from tests.unit.alloc_helpers import pending, run

QUEUES = ("default", "batch", "gpu")


def random_cluster(rng: random.Random) -> tuple[list[NodeRecord], list[PendingJob]]:
    nodes = []
    for k in range(rng.randrange(1, 12)):
        cpu = rng.choice((2, 4, 8))
        gpu = rng.choice((0, 0, 2, 8))
        resources = {"cpu": float(cpu), **({"gpu": float(gpu)} if gpu else {})}
        running = rng.randrange(0, 3)
        spec = NodeSpec(
            id=f"n{k:02d}",
            name=f"n{k}",
            slots=rng.choice((1, 2, 4)),
            prefetch=rng.choice((0, 1)),
            resources=resources,
            labels={"zone": rng.choice(("a", "b"))},
            queues=tuple(rng.sample(QUEUES, rng.randrange(1, 3))),
        )
        used = {"cpu": float(min(cpu, running))}
        state = NodeState.LIVE if rng.random() < 0.9 else NodeState.DRAINING
        nodes.append(NodeRecord(spec, state, 0.0, 0.0, 0, running, used))
    jobs = []
    for seq in range(rng.randrange(0, 60)):
        resources = rng.choice(({}, {"cpu": 1.0}, {"cpu": 2.0}, {"gpu": 1.0}, {"cpu": 9.0}))
        jobs.append(
            PendingJob(
                id=f"j{seq:03d}",
                queue=rng.choice(QUEUES),
                priority=rng.choice((0, 0, 5)),
                seq=seq,
                resources=resources,
                labels=rng.choice(({}, {}, {"zone": "a"})),
                affinity=rng.choice(({}, {"zone": "b"})),
                alloc=AllocSpec(tenant=rng.choice((None, "t1"))),  # ignored without shares
            )
        )
    jobs.sort(key=lambda j: (-j.priority, j.seq))
    return nodes, jobs


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_defaults_decide_exactly_what_place_decides(policy: str) -> None:
    rng = random.Random(policy)
    for _ in range(150):
        nodes, jobs = random_cluster(rng)
        running = [run("r", "n00", priority=0)]  # running work that is not preemptible
        assert not engaged(jobs, running, AllocationConfig())
        decided = allocate(jobs, nodes, policy, running=running, now=5.0).placement
        today = place(jobs, nodes, policy)
        assert decided.assignments == today.assignments
        assert decided.never == today.never
        assert decided.waiting == today.waiting


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_the_policy_engine_mirrors_place(policy: str) -> None:
    """Aging on every job, all enqueued now: the engine runs, yet nothing reorders."""
    rng = random.Random(f"engine-{policy}")
    for _ in range(150):
        nodes, jobs = random_cluster(rng)
        aged = [dataclasses.replace(j, alloc=AllocSpec(aging=60.0), enqueued_at=5.0) for j in jobs]
        if aged:
            assert engaged(aged, [], AllocationConfig())
        decided = allocate(aged, nodes, policy, now=5.0).placement
        today = place(jobs, nodes, policy)
        assert decided.assignments == today.assignments
        assert decided.never == today.never
        assert decided.waiting == today.waiting


def test_what_engages_the_engine() -> None:
    plain = [pending("a")]
    assert not engaged(plain, [], AllocationConfig())
    assert engaged(plain, [], AllocationConfig(fair_share=True))
    assert engaged(plain, [], AllocationConfig(backfill=True))
    assert engaged([pending("g", gang="g", gang_size=1)], [], AllocationConfig())
    assert engaged(plain, [run("r", "n", preemptible=True)], AllocationConfig())
    assert not engaged(plain, [run("r", "n", preemptible=True)], AllocationConfig(preemption=False))
    assert AllocationConfig(shares={"x": Share()}).fair
    assert not AllocationConfig(shares={"x": Share()}, fair_share=False).fair
