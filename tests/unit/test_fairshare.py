"""Weighted Dominant Resource Fairness between tenants (rota.scheduler.fairshare, policy)."""

from __future__ import annotations

from collections import Counter

import pytest

from rota.scheduler.fairshare import FairShare, Share, jain
from rota.scheduler.policy import AllocationConfig, allocate
from tests.unit.alloc_helpers import node, pending, run


def tenants_of(decision_jobs: list[str]) -> Counter[str]:
    return Counter(j.split("-")[0] for j in decision_jobs)


def test_drf_example_from_the_paper() -> None:
    # Ghodsi et al. 2011: 9 CPU, 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPU, 1 GB>.
    # DRF gives A 3 tasks and B 2 tasks: both dominant shares 2/3.
    nodes = [node("n", slots=100, resources={"cpu": 9, "mem": 18})]
    jobs = [pending(f"a-{k}", seq=k, resources={"cpu": 1, "mem": 4}, tenant="a") for k in range(9)]
    jobs += [
        pending(f"b-{k}", seq=9 + k, resources={"cpu": 3, "mem": 1}, tenant="b") for k in range(9)
    ]
    config = AllocationConfig(fair_share=True)
    placed = allocate(jobs, nodes, config=config).placement.assignments
    assert tenants_of([a.job_id for a in placed]) == {"a": 3, "b": 2}


def test_flooding_tenant_gets_no_more_than_its_share() -> None:
    nodes = [node(f"n{k}", slots=4) for k in range(4)]  # 16 slots
    flood = [pending(f"big-{k}", seq=k, tenant="big") for k in range(100)]
    small = [pending(f"small-{k}", seq=100 + k, tenant="small") for k in range(10)]
    placed = allocate(flood + small, nodes, config=AllocationConfig(fair_share=True))
    assert tenants_of([a.job_id for a in placed.placement.assignments]) == {"big": 8, "small": 8}
    # strict priority order (today): the flood, submitted first, takes everything
    today = allocate(flood + small, nodes).placement.assignments
    assert tenants_of([a.job_id for a in today]) == {"big": 16}


def test_weights_and_running_work_count() -> None:
    nodes = [node("n", slots=12)]
    jobs = [pending(f"a-{k}", seq=k, tenant="a") for k in range(20)]
    jobs += [pending(f"b-{k}", seq=20 + k, tenant="b") for k in range(20)]
    config = AllocationConfig(shares={"a": Share(weight=2)})
    placed = allocate(jobs, nodes, config=config).placement.assignments
    assert tenants_of([a.job_id for a in placed]) == {"a": 8, "b": 4}
    # b already runs 4 jobs on a second node: the free slots go to a until the shares meet
    nodes.append(node("m", slots=4, running=4))
    running = [run(f"r{k}", "m", tenant="b") for k in range(4)]
    placed = allocate(jobs, nodes, running=running, config=config).placement.assignments
    # 16 slots in all: a (weight 2) ends with 2/3 of them, b with 1/3 (its 4 running + 1)
    assert tenants_of([a.job_id for a in placed]) == {"a": 11, "b": 1}


def test_hard_cap_holds_jobs_even_on_an_idle_fleet() -> None:
    nodes = [node("g", slots=16, resources={"gpu": 16})]
    jobs = [pending(f"acme-{k}", seq=k, resources={"gpu": 3}, tenant="acme") for k in range(5)]
    config = AllocationConfig(shares={"acme": Share(limit={"gpu": 8})})
    decision = allocate(jobs, nodes, config=config)
    assert len(decision.placement.assignments) == 2  # 6 GPUs; a third would make 9
    assert decision.reasons["acme-2"] == "tenant acme at its limit gpu=8"
    assert decision.placement.waiting == 3


def test_work_conserving_and_priority_kept_within_a_tenant() -> None:
    nodes = [node("n", slots=6)]
    jobs = [
        pending("a-hi", priority=5, seq=0, tenant="a"),
        pending("a-lo", priority=0, seq=1, tenant="a"),
        *[pending(f"a-{k}", priority=0, seq=2 + k, tenant="a") for k in range(10)],
    ]
    config = AllocationConfig(shares={"a": Share(), "b": Share(weight=5)})  # b submits nothing
    placed = [a.job_id for a in allocate(jobs, nodes, config=config).placement.assignments]
    assert len(placed) == 6  # b's share is not kept idle
    assert placed[:2] == ["a-hi", "a-lo"]


def test_tenant_defaults_to_the_queue() -> None:
    nodes = [node("n", slots=4, queues=("x", "y"))]
    jobs = [pending(f"x-{k}", seq=k, queue="x") for k in range(8)]
    jobs += [pending(f"y-{k}", seq=8 + k, queue="y") for k in range(8)]
    placed = allocate(jobs, nodes, config=AllocationConfig(fair_share=True)).placement
    assert tenants_of([a.job_id for a in placed.assignments]) == {"x": 2, "y": 2}


def test_dominant_share_and_jain() -> None:
    fair = FairShare({"cpu": 10, "mem": 100}, {"a": Share(weight=2)}, {"a": {"cpu": 5, "mem": 10}})
    assert fair.dominant("a") == pytest.approx(0.5)
    assert fair.weighted("a") == pytest.approx(0.25)
    assert jain([1, 1, 1]) == pytest.approx(1.0)
    assert jain([1, 0, 0, 0]) == pytest.approx(0.25)


def test_shares_document_round_trips_and_drops_bad_entries() -> None:
    from rota.scheduler.fairshare import shares_from_doc, shares_to_doc

    shares = {"acme": Share(2.0, {"gpu": 8.0}), "beta": Share()}
    doc = shares_to_doc(shares)
    assert doc == {
        "tenants": {
            "acme": {"weight": 2.0, "limit": {"gpu": 8.0}},
            "beta": {"weight": 1.0, "limit": {}},
        }
    }
    assert shares_from_doc(doc) == shares
    bad = {"tenants": {"a": {"weight": 0}, "b": "x", "c": {"weight": 1, "limit": {"gpu": "8"}}}}
    assert shares_from_doc(bad) == {"c": Share(1.0, {})}
    assert shares_from_doc(None) == {} and shares_from_doc({"tenants": []}) == {}
