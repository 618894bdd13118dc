"""Preemption: victims by priority gap, fewest resources, least progress; anti-thrash."""

from __future__ import annotations

from rota.core.model import NodeRecord, RunningJob
from rota.scheduler.policy import AllocationConfig, AllocationState, allocate
from rota.scheduler.preemption import PreemptionRules
from tests.unit.alloc_helpers import busy, pending, run


def gpu_node(jobs: list[RunningJob], name: str = "n") -> NodeRecord:
    return busy(name, jobs, slots=8, resources={"gpu": 4})


def test_urgent_job_preempts_the_cheapest_victims() -> None:
    running = [
        run("old", "n", priority=0, resources={"gpu": 2}, started_at=0.0, preemptible=True),
        run("new", "n", priority=0, resources={"gpu": 2}, started_at=90.0, preemptible=True),
    ]
    urgent = pending("urgent", priority=20, resources={"gpu": 2})
    decision = allocate([urgent], [gpu_node(running)], running=running, now=100.0)
    assert not decision.placement.assignments
    [p] = decision.preemptions
    assert p.victims == ("new",)  # 2 GPUs are enough; the one with least progress goes
    assert p.lost == 10.0
    assert decision.reasons["urgent"] == "preempting 1 job(s) on n"


def test_fewest_resources_freed_across_nodes() -> None:
    a = [run("a-big", "a", priority=0, resources={"gpu": 4}, preemptible=True)]
    b = [
        run("b-1", "b", priority=0, resources={"gpu": 1}, preemptible=True),
        run("b-2", "b", priority=0, resources={"gpu": 3}, started_at=50.0),  # not preemptible
    ]
    nodes = [gpu_node(a, "a"), gpu_node(b, "b")]
    decision = allocate(
        [pending("u", priority=50, resources={"gpu": 1})], nodes, running=a + b, now=60.0
    )
    assert [(p.node_id, p.victims) for p in decision.preemptions] == [("b", ("b-1",))]


def test_gap_preemptible_flag_and_protection() -> None:
    rules = PreemptionRules(gap=10, protect_for=300.0)
    config = AllocationConfig(rules=rules)
    urgent = pending("u", priority=10, resources={"gpu": 4})

    def victims(
        victim_priority: int, preemptible: bool, preempted_at: float | None
    ) -> list[tuple[str, ...]]:
        running = [
            run(
                "v",
                "n",
                priority=victim_priority,
                resources={"gpu": 4},
                preemptible=preemptible,
                preempted_at=preempted_at,
            )
        ]
        d = allocate([urgent], [gpu_node(running)], running=running, now=1000.0, config=config)
        return [p.victims for p in d.preemptions]

    assert victims(0, True, None) == [("v",)]
    assert victims(1, True, None) == []  # only 9 levels lower
    assert victims(0, False, None) == []  # not preemptible
    assert victims(0, True, 800.0) == []  # preempted 200 s ago: protected
    assert victims(0, True, 600.0) == [("v",)]  # 400 s ago: no longer


def test_rate_cap_and_room_kept_for_the_preemptor() -> None:
    running = [
        run(f"v{k}", f"n{k}", priority=0, resources={"gpu": 4}, preemptible=True) for k in range(3)
    ]
    nodes = [gpu_node([r], f"n{k}") for k, r in enumerate(running)]
    urgent = [pending(f"u{k}", priority=50, seq=k, resources={"gpu": 4}) for k in range(3)]
    state = AllocationState()
    config = AllocationConfig(rules=PreemptionRules(per_minute=2))
    first = allocate(urgent, nodes, running=running, now=0.0, config=config, state=state)
    assert len(first.preemptions) == 2  # the third would pass the cap
    assert {p.victims[0] for p in first.preemptions} == {"v0", "v1"}
    # next cycle: the victims have not stopped yet; nothing more is preempted for u0/u1,
    # and the cap still holds u2 back within the minute
    stopping = [run(r.id, r.node_id, resources=r.resources, preemptible=True) for r in running]
    again = allocate(urgent, nodes, running=stopping, now=10.0, config=config, state=state)
    assert again.preemptions == []
    assert again.reasons["u0"].startswith("waiting for preempted jobs to stop")
    # the victims stopped: the freed room goes to the jobs it was freed for, even though a
    # job submitted earlier (seq -1, same priority) is offered first
    early = pending("early", priority=50, seq=-1, resources={"gpu": 4})
    freed = [gpu_node([], "n0"), gpu_node([], "n1"), nodes[2]]
    done = allocate(
        [early, *urgent], freed, running=running[2:], now=20.0, config=config, state=state
    )
    placed = {a.job_id: a.node_id for a in done.placement.assignments}
    assert placed == {"u0": "n0", "u1": "n1"}
    assert state.preempting == {}
