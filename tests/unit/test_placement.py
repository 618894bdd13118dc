"""Placement policy: filters, scores, affinity, backfilling and the reasons jobs never run."""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.core.model import Assignment, NodeRecord, NodeSpec, NodeState, PendingJob
from rota.core.resources import fits
from rota.scheduler import placement
from rota.scheduler.placement import POLICIES, Placement, Policy, get_policy, place


def node(
    node_id: str,
    *,
    slots: int = 4,
    prefetch: int = 0,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    queues: tuple[str, ...] = ("default",),
    assigned: int = 0,
    running: int = 0,
    used: dict[str, float] | None = None,
    state: NodeState = NodeState.LIVE,
) -> NodeRecord:
    spec = NodeSpec(
        id=node_id,
        name=node_id,
        slots=slots,
        prefetch=prefetch,
        resources=resources or {},
        labels=labels or {},
        queues=queues,
    )
    return NodeRecord(spec, state, 0.0, 0.0, assigned, running, used or {})


def job(
    job_id: str,
    *,
    queue: str = "default",
    priority: int = 0,
    seq: int = 0,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    affinity: dict[str, str] | None = None,
) -> PendingJob:
    return PendingJob(
        id=job_id,
        queue=queue,
        priority=priority,
        seq=seq,
        resources=resources or {},
        labels=labels or {},
        affinity=affinity or {},
    )


def jobs_of(count: int, **kwargs: object) -> list[PendingJob]:
    return [job(f"j{k}", seq=k, **kwargs) for k in range(count)]  # type: ignore[arg-type]


def where(result: Placement) -> dict[str, str]:
    return {a.job_id: a.node_id for a in result.assignments}


# ---- policies ---------------------------------------------------------------------------


def test_least_loaded_takes_the_node_with_the_lowest_load() -> None:
    nodes = [
        node("a", slots=4, running=2),  # load 0.5
        node("b", slots=4, running=1),  # load 0.25
        node("c", slots=4, running=0, resources={"cpu": 4}, used={"cpu": 3}),  # load 0.75
    ]
    assert where(place([job("j")], nodes)) == {"j": "b"}


def test_least_loaded_is_the_default_and_spreads_identical_nodes_by_id() -> None:
    nodes = [node("c"), node("a"), node("b")]
    result = place(jobs_of(4), nodes)
    assert [a.node_id for a in result.assignments] == ["a", "b", "c", "a"]


def test_spread_counts_jobs_not_resources() -> None:
    nodes = [
        node("a", running=1, resources={"cpu": 8}),  # 1 job, little cpu used
        node("b", running=0, resources={"cpu": 8}, used={"cpu": 6}),  # no job, cpu busy
    ]
    assert where(place([job("j", resources={"cpu": 1})], nodes, "spread")) == {"j": "b"}
    assert where(place([job("j", resources={"cpu": 1})], nodes, "least_loaded")) == {"j": "a"}


def test_bin_pack_fills_the_fullest_node_before_empty_ones() -> None:
    nodes = [
        node("a", slots=2),
        node("b", slots=2, running=1),
        node("c", slots=2),
    ]
    result = place(jobs_of(4), nodes, "bin_pack")
    assert [a.node_id for a in result.assignments] == ["b", "a", "a", "c"]


def test_bin_pack_moves_to_a_node_another_shape_filled() -> None:
    nodes = [node("a", slots=4, resources={"cpu": 4}), node("b", slots=4, resources={"cpu": 4})]
    jobs = [
        job("big", seq=0, resources={"cpu": 2}),
        job("small", seq=1, resources={"cpu": 1}),
    ]
    assert where(place(jobs, nodes, "bin_pack")) == {"big": "a", "small": "a"}


def test_load_counts_the_fullest_resource() -> None:
    nodes = [
        node("a", slots=10, resources={"cpu": 4, "mem": 100}, used={"mem": 90}),  # 0.9
        node("b", slots=10, running=5, resources={"cpu": 4, "mem": 100}),  # 0.5
    ]
    assert where(place([job("j")], nodes, "least_loaded")) == {"j": "b"}
    assert where(place([job("j")], nodes, "bin_pack")) == {"j": "a"}


def test_policy_object_and_custom_policy() -> None:
    most_jobs = Policy("most_jobs", lambda in_flight, limit, load: float(in_flight), False)
    nodes = [node("a", running=1), node("b", running=2)]
    assert where(place([job("j")], nodes, most_jobs)) == {"j": "b"}
    assert where(place([job("j")], nodes, POLICIES["spread"])) == {"j": "a"}


def test_get_policy_and_unknown_name() -> None:
    assert set(POLICIES) == {"least_loaded", "spread", "bin_pack"}
    assert get_policy("spread") is POLICIES["spread"]
    with pytest.raises(ValueError, match=r"bin_pack, least_loaded, spread"):
        get_policy("random")
    with pytest.raises(ValueError, match="unknown placement policy 'fastest'"):
        place([job("j")], [node("a")], "fastest")


# ---- affinity ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_affinity_beats_the_policy_score(policy: str) -> None:
    nodes = [
        node("a", slots=4, running=3, labels={"zone": "eu"}),
        node("b", slots=4, running=0, labels={"zone": "us"}),
        node("c", slots=4, running=1, labels={"zone": "us"}),
    ]
    assert where(place([job("j", affinity={"zone": "eu"})], nodes, policy)) == {"j": "a"}


def test_more_affinity_matches_win() -> None:
    nodes = [
        node("a", labels={"zone": "eu", "disk": "hdd"}),
        node("b", running=3, labels={"zone": "eu", "disk": "ssd"}),
        node("c", labels={"disk": "ssd"}),
    ]
    j = job("j", affinity={"zone": "eu", "disk": "ssd"})
    assert where(place([j], nodes)) == {"j": "b"}


def test_affinity_is_not_a_filter() -> None:
    nodes = [node("a", slots=1, labels={"zone": "eu"}), node("b", labels={"zone": "us"})]
    jobs = jobs_of(3, affinity={"zone": "eu"})
    assert where(place(jobs, nodes)) == {"j0": "a", "j1": "b", "j2": "b"}
    assert where(place([job("j", affinity={"gpu": "yes"})], nodes)) == {"j": "a"}


# ---- filters ----------------------------------------------------------------------------


def test_queue_filter() -> None:
    nodes = [node("a", queues=("default",)), node("b", running=3, queues=("gpu", "default"))]
    assert where(place([job("j", queue="gpu")], nodes)) == {"j": "b"}


def test_required_labels_must_match_exactly() -> None:
    nodes = [
        node("a", labels={"zone": "us"}),
        node("b", labels={}),
        node("c", running=3, labels={"zone": "eu", "disk": "ssd"}),
    ]
    assert where(place([job("j", labels={"zone": "eu"})], nodes)) == {"j": "c"}


def test_slots_count_prefetch() -> None:
    nodes = [node("a", slots=1, prefetch=2, assigned=1, running=1)]
    result = place(jobs_of(3), nodes)
    assert where(result) == {"j0": "a"}
    assert result.waiting == 2
    assert result.never == {}


def test_resources_are_strict() -> None:
    nodes = [node("a", slots=10, prefetch=10, resources={"cpu": 4, "mem": 10}, used={"mem": 2})]
    result = place(jobs_of(4, resources={"cpu": 2, "mem": 3}), nodes)
    assert where(result) == {"j0": "a", "j1": "a"}
    assert result.waiting == 2


def test_used_resources_and_fractional_quantities() -> None:
    nodes = [node("a", slots=10, resources={"cpu": 1}, used={"cpu": 0.3})]
    result = place(jobs_of(5, resources={"cpu": 0.1}), nodes)
    assert len(result.assignments) == 5  # 0.3 + 0.1 * 5 may round above 0.8: still fits
    result = place(jobs_of(8, resources={"cpu": 0.1}), nodes)
    assert len(result.assignments) == 7 and result.waiting == 1


def test_a_node_never_gets_more_than_its_free_slots() -> None:
    nodes = [
        node("a", slots=2, prefetch=1, running=1),
        node("b", slots=1, prefetch=0),
        node("c", slots=3, prefetch=2, assigned=4),
        node("d", slots=2, prefetch=0, assigned=3),  # already over: gets nothing
    ]
    for policy in POLICIES:
        result = place(jobs_of(20), nodes, policy)
        assert Counter(a.node_id for a in result.assignments) == {"a": 2, "b": 1, "c": 1}
        assert result.waiting == 16


def test_non_live_nodes_are_ignored() -> None:
    nodes = [
        node("a", state=NodeState.DRAINING),
        node("b", state=NodeState.DEAD),
        node("c", running=3),
    ]
    assert where(place([job("j")], nodes)) == {"j": "c"}
    result = place([job("j", queue="gpu")], [node("g", queues=("gpu",), state=NodeState.STOPPED)])
    assert result.never == {"j": "no live node serves queue 'gpu'"}


# ---- order, backfilling, waiting and never -----------------------------------------------


def test_higher_priority_first_when_capacity_is_short() -> None:
    nodes = [node("a", slots=2)]
    jobs = [
        job("urgent", priority=10, seq=5),
        job("high", priority=5, seq=1),
        job("low", priority=0, seq=0),
    ]
    result = place(jobs, nodes)
    assert [a.job_id for a in result.assignments] == ["urgent", "high"]
    assert result.waiting == 1


def test_backfilling_places_smaller_jobs_after_a_big_one_that_waits() -> None:
    nodes = [node("a", slots=8, resources={"cpu": 4}, used={"cpu": 2})]
    jobs = [
        job("big", priority=9, resources={"cpu": 4}),
        job("small", priority=1, resources={"cpu": 1}),
        job("tiny", priority=0, resources={"cpu": 1}),
        job("more", priority=0, resources={"cpu": 1}),
    ]
    result = place(jobs, nodes)
    assert where(result) == {"small": "a", "tiny": "a"}
    assert result.waiting == 2
    assert result.never == {}


def test_never_reasons() -> None:
    nodes = [
        node("a", resources={"cpu": 8, "mem": 16}, labels={"zone": "eu"}),
        node("b", resources={"cpu": 4, "gpu": 1}, labels={"zone": "us", "accel": "t4"}),
        node("z", slots=0, queues=("empty",)),
    ]
    jobs = [
        job("q", queue="nightly"),
        job("l", labels={"zone": "ap"}),
        job("r", resources={"cpu": 16}),
        job("u", resources={"tpu": 1}),
        job("both", resources={"mem": 1, "gpu": 1}),
        job("labelled", labels={"zone": "us"}, resources={"cpu": 8}),
        job("slots", queue="empty"),
        job("ok", resources={"cpu": 8}),
    ]
    result = place(jobs, nodes)
    assert where(result) == {"ok": "a"}
    assert result.waiting == 0
    assert result.never == {
        "q": "no live node serves queue 'nightly'",
        "l": "no live node serving queue 'default' has labels zone=ap",
        "r": "cpu=16 is more than any live node serving queue 'default' has (largest: 8)",
        "u": "tpu=1 is more than any live node serving queue 'default' has (largest: 0)",
        "both": "no single live node serving queue 'default' has gpu=1,mem=1 at once",
        "labelled": "cpu=8 is more than any live node serving queue 'default' with labels "
        "zone=us has (largest: 4)",
        "slots": "no live node serving queue 'empty' has any job slots",
    }


def test_never_looks_at_capacity_not_current_use() -> None:
    nodes = [node("a", slots=1, running=1, resources={"cpu": 4}, used={"cpu": 4})]
    result = place([job("j", resources={"cpu": 4})], nodes)
    assert result.assignments == [] and result.never == {} and result.waiting == 1


def test_waiting_counts_every_job_that_did_not_fit() -> None:
    nodes = [node("a", slots=1), node("g", slots=1, queues=("gpu",))]
    jobs = [*jobs_of(5), job("g1", queue="gpu"), job("g2", queue="gpu"), job("x", queue="x")]
    result = place(jobs, nodes)
    assert where(result) == {"j0": "a", "g1": "g"}
    assert result.waiting == 5
    assert list(result.never) == ["x"]


def test_empty_inputs() -> None:
    assert place([], [node("a")]) == Placement()
    assert place([], []) == Placement()
    result = place([job("j1"), job("j2")], [])
    assert result.assignments == [] and result.waiting == 0
    assert result.never == {
        "j1": "no live node serves queue 'default'",
        "j2": "no live node serves queue 'default'",
    }


# ---- determinism and purity -------------------------------------------------------------


def random_cluster(seed: int) -> tuple[list[PendingJob], list[NodeRecord]]:
    rng = random.Random(seed)
    nodes = [
        node(
            f"n{i:03d}",
            slots=rng.randint(1, 4),
            prefetch=rng.randint(0, 1),
            resources={"cpu": rng.choice((2, 4, 8)), "mem": rng.choice((4, 16))},
            labels={"zone": rng.choice(("eu", "us")), "disk": rng.choice(("ssd", "hdd"))},
            queues=rng.choice((("default",), ("default", "batch"), ("batch",))),
            running=rng.randint(0, 1),
            used={"cpu": rng.randint(0, 1)},
        )
        for i in range(60)
    ]
    jobs = [
        job(
            f"j{k}",
            seq=k,
            priority=rng.randint(0, 2),
            queue=rng.choice(("default", "batch")),
            resources={"cpu": rng.choice((1, 2, 4)), "mem": rng.choice((1, 4))},
            labels=rng.choice(({}, {"disk": "ssd"})),
            affinity=rng.choice(({}, {"zone": "eu"}, {"zone": "us", "disk": "hdd"})),
        )
        for k in range(300)
    ]
    jobs.sort(key=lambda j: (-j.priority, j.seq))
    return jobs, nodes


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_deterministic_whatever_the_node_order(policy: str) -> None:
    jobs, nodes = random_cluster(7)
    first = place(jobs, nodes, policy)
    assert first.assignments and first.waiting
    assert place(jobs, nodes, policy) == first
    shuffled = list(nodes)
    random.Random(3).shuffle(shuffled)
    assert place(jobs, shuffled, policy) == first


def test_inputs_are_not_modified() -> None:
    jobs, nodes = random_cluster(11)
    before = copy.deepcopy((jobs, nodes))
    for policy in POLICIES:
        place(jobs, nodes, policy)
    assert (jobs, nodes) == before


# ---- property: the result is what a plain scan of every node would decide ----------------


def reference(jobs: Sequence[PendingJob], nodes: Sequence[NodeRecord], policy: Policy) -> Placement:
    """The rules, written plainly: scan every node for every job."""
    live = [n for n in nodes if n.state == NodeState.LIVE]
    in_flight = {n.id: n.in_flight for n in live}
    used = {n.id: dict(n.used) for n in live}
    out = Placement()

    def load(n: NodeRecord) -> float:
        limit = n.spec.slots + n.spec.prefetch
        ratios = [in_flight[n.id] / limit]
        ratios += [used[n.id].get(r, 0.0) / c for r, c in n.spec.resources.items() if c > 0]
        return max(ratios)

    for j in jobs:
        able = [
            n
            for n in live
            if j.queue in n.spec.queues
            and all(n.spec.labels.get(k) == v for k, v in j.labels.items())
            and n.spec.slots + n.spec.prefetch > 0
            and fits(j.resources, n.spec.resources)
        ]
        if not able:
            out.never[j.id] = "never"
            continue
        free = [
            n
            for n in able
            if in_flight[n.id] < n.spec.slots + n.spec.prefetch
            and fits(
                j.resources,
                {r: n.spec.resources.get(r, 0.0) - used[n.id].get(r, 0.0) for r in j.resources},
            )
        ]
        if not free:
            out.waiting += 1
            continue
        best = min(
            free,
            key=lambda n: (
                -sum(1 for k, v in j.affinity.items() if n.spec.labels.get(k) == v),
                -policy.score(in_flight[n.id], n.spec.slots + n.spec.prefetch, load(n)),
                n.id,
            ),
        )
        out.assignments.append(Assignment(j.id, best.id))
        in_flight[best.id] += 1
        for r, q in j.resources.items():
            used[best.id][r] = used[best.id].get(r, 0.0) + q
    return out


LABELS = st.dictionaries(st.sampled_from(["zone", "disk"]), st.sampled_from(["a", "b"]), max_size=2)
QUANTITIES = st.dictionaries(
    st.sampled_from(["cpu", "mem"]), st.integers(1, 6).map(float), max_size=2
)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[PendingJob], list[NodeRecord]]:
    nodes = []
    for i in range(draw(st.integers(0, 7))):
        slots, prefetch = draw(st.integers(0, 3)), draw(st.integers(0, 2))
        nodes.append(
            node(
                f"n{i}",
                slots=slots,
                prefetch=prefetch,
                resources=draw(QUANTITIES),
                labels=draw(LABELS),
                queues=tuple(draw(st.sets(st.sampled_from(["q1", "q2"]), min_size=1))),
                assigned=draw(st.integers(0, 2)),
                running=draw(st.integers(0, 2)),
                used=draw(
                    st.dictionaries(st.sampled_from(["cpu", "mem"]), st.integers(0, 4).map(float))
                ),
                state=draw(st.sampled_from([NodeState.LIVE, NodeState.LIVE, NodeState.DRAINING])),
            )
        )
    jobs = [
        job(
            f"j{k}",
            seq=k,
            priority=draw(st.integers(0, 2)),
            queue=draw(st.sampled_from(["q1", "q2", "q3"])),
            resources=draw(QUANTITIES),
            labels=draw(LABELS),
            affinity=draw(LABELS),
        )
        for k in range(draw(st.integers(0, 25)))
    ]
    jobs.sort(key=lambda j: (-j.priority, j.seq))
    return jobs, nodes


POLICIES_TO_CHECK = [
    *POLICIES.values(),
    # the eager re-ranking path must agree with the lazy one
    Policy("least_loaded_eager", POLICIES["least_loaded"].score, monotone=False),
    Policy("most_jobs", lambda in_flight, limit, load: float(in_flight), monotone=False),
]


def check(jobs: list[PendingJob], nodes: list[NodeRecord], policy: Policy) -> None:
    result = place(jobs, nodes, policy)

    # every assignment passes the filter, replayed in order; no node ends over capacity
    by_id = {n.id: n for n in nodes}
    in_flight = {n.id: n.in_flight for n in nodes}
    used = {n.id: dict(n.used) for n in nodes}
    jobs_by_id = {j.id: j for j in jobs}
    for a in result.assignments:
        n, j = by_id[a.node_id], jobs_by_id[a.job_id]
        assert n.state == NodeState.LIVE
        assert j.queue in n.spec.queues
        assert j.labels.items() <= n.spec.labels.items()
        assert in_flight[n.id] < n.spec.slots + n.spec.prefetch
        free = {r: n.spec.resources.get(r, 0.0) - used[n.id].get(r, 0.0) for r in j.resources}
        assert fits(j.resources, free)
        in_flight[n.id] += 1
        for r, q in j.resources.items():
            used[n.id][r] = used[n.id].get(r, 0.0) + q
    for n in nodes:
        if in_flight[n.id] > n.in_flight:
            assert in_flight[n.id] <= n.spec.slots + n.spec.prefetch
            for r, q in used[n.id].items():
                if q > n.used.get(r, 0.0):
                    assert q <= n.spec.resources.get(r, 0.0) + 1e-9

    # every job is decided exactly once, and exactly as a plain scan decides
    placed = [a.job_id for a in result.assignments]
    assert len(placed) + len(result.never) + result.waiting == len(jobs)
    assert not set(placed) & set(result.never)
    expected = reference(jobs, nodes, policy)
    assert result.assignments == expected.assignments
    assert list(result.never) == list(expected.never)
    assert result.waiting == expected.waiting


@settings(max_examples=200, deadline=None)
@given(clusters(), st.sampled_from(POLICIES_TO_CHECK), st.sampled_from([1, 2, 8]), st.booleans())
def test_placement_obeys_the_rules(
    cluster: tuple[list[PendingJob], list[NodeRecord]],
    policy: Policy,
    skip_limit: int,
    tight: bool,
) -> None:
    # small limits, so that small clusters also take the shortcuts of large ones (raised
    # floors, failed requests remembered, the memory bound on raised floors, heaps rid of
    # stale entries)
    with (
        patch.object(placement, "_SKIP_LIMIT", skip_limit),
        patch.object(placement, "_RAISED_ENTRIES", 4 if tight else 1 << 22),
        patch.object(placement, "_STALE_SLACK", 0 if tight else 64),
    ):
        check(*cluster, policy)


@pytest.mark.parametrize("policy", POLICIES_TO_CHECK, ids=lambda p: p.name)
@pytest.mark.parametrize("seed", [1, 2])
def test_a_larger_cluster_of_many_job_sizes(policy: Policy, seed: int) -> None:
    rng = random.Random(seed)
    nodes = [
        node(
            f"n{i:03d}",
            slots=rng.randint(1, 6),
            prefetch=rng.randint(0, 2),
            resources={"cpu": rng.choice((4, 8, 16)), "mem": rng.choice((8e9, 32e9, 64e9))},
            labels={"zone": rng.choice(("eu", "us")), "disk": rng.choice(("ssd", "hdd"))},
            queues=rng.choice((("default",), ("default", "batch"))),
            running=rng.randint(0, 2),
            used={"cpu": rng.choice((0, 0.5, 1.5)), "mem": rng.choice((0, 1e9, 3.3e9))},
        )
        for i in range(120)
    ]
    jobs = [
        job(
            f"j{k}",
            seq=k,
            priority=rng.randint(0, 3),
            queue=rng.choice(("default", "default", "batch")),
            resources={
                "cpu": rng.choice((0.25, 0.5, 1, 1.5, 2, 3, 5, 8)),
                "mem": rng.choice((0.5e9, 1e9, 1.2e9, 3e9, 7.5e9, 20e9)) + rng.randint(0, 9),
            },
            labels=rng.choice(({}, {}, {"disk": "ssd"})),
            affinity=rng.choice(({}, {"zone": "eu"}, {"zone": "us", "disk": "hdd"})),
        )
        for k in range(900)
    ]
    jobs.sort(key=lambda j: (-j.priority, j.seq))
    check(jobs, nodes, policy)


@pytest.mark.parametrize("policy", POLICIES_TO_CHECK, ids=lambda p: p.name)
def test_many_jobs_on_few_big_nodes(policy: Policy) -> None:
    # each node takes many jobs, so scores change often and stale entries pile up
    nodes = [
        node(f"n{i:02d}", slots=40, resources={"cpu": 64, "mem": 256}, used={"cpu": i % 5})
        for i in range(30)
    ]
    sizes = [{"cpu": 1.0, "mem": 2.0}, {"cpu": 3.0, "mem": 5.0}, {"cpu": 0.5}]
    jobs = [job(f"j{k}", seq=k, resources=sizes[k % 3 if k % 7 else 1]) for k in range(1300)]
    check(jobs, nodes, policy)
    with patch.object(placement, "_STALE_SLACK", 0):
        check(jobs, nodes, policy)


# ---- nodes about to be declared dead get nothing new ----------------------------------------
def test_placeable_skips_nodes_whose_heartbeat_lags_past_two_thirds_of_the_timeout() -> None:
    now, timeout = 100.0, 3.0  # horizon: 98.0
    nodes = [
        dataclasses.replace(node("a"), heartbeat_at=100.0),
        dataclasses.replace(node("b"), heartbeat_at=98.0),  # exactly 2/3 late: kept
        dataclasses.replace(node("c"), heartbeat_at=97.9),  # later than 2/3: skipped
        dataclasses.replace(node("d", state=NodeState.DRAINING), heartbeat_at=100.0),
    ]
    kept = placement.placeable(nodes, now, timeout)
    assert [n.id for n in kept] == ["a", "b"]
    result = place([job(f"j{i}") for i in range(12)], kept)
    assert {a.node_id for a in result.assignments} == {"a", "b"}
    assert len(result.assignments) == 8 and result.waiting == 4


def test_placeable_counts_the_lag_from_the_freshest_heartbeat_when_all_are_late() -> None:
    # A slow store: every beat is 2.5 s old; only the node 2 s behind the others is left out.
    nodes = [
        dataclasses.replace(node("a"), heartbeat_at=97.5),
        dataclasses.replace(node("b"), heartbeat_at=96.0),
        dataclasses.replace(node("c"), heartbeat_at=95.4),
    ]
    assert [n.id for n in placement.placeable(nodes, 100.0, 3.0)] == ["a", "b"]
    assert placement.placeable([], 100.0, 3.0) == []


def test_the_leader_places_nothing_on_a_node_whose_heartbeat_lags(tmp_path: Path) -> None:
    from rota.core.model import NewJob
    from rota.scheduler.config import SchedulerConfig
    from rota.scheduler.leader import Scheduler
    from rota.store import open_store

    url = f"sqlite:///{tmp_path / 'rota.db'}"
    store = open_store(url)
    try:
        for name in ("quiet", "beating"):
            store.register_node(NodeSpec(id=name, name=name, slots=4, prefetch=0))
        time.sleep(0.5)  # past 2/3 of the 0.6 s failure timeout, not past the timeout
        store.heartbeat("beating", [], 10.0)
        ids = store.submit([NewJob(f"j{i}", "t", "default", "{}") for i in range(3)])
        sched = Scheduler(url, SchedulerConfig(failure_timeout=0.6, reap_every=60.0))
        sched.cycle(store)
        placed = {r.node_id for r in store.get_jobs(ids)}
        assert placed == {"beating"}
        assert {n.id for n in store.list_nodes([NodeState.LIVE])} == {"quiet", "beating"}
    finally:
        store.close()


def test_the_leader_reaps_a_node_as_soon_as_it_is_past_the_failure_timeout(
    tmp_path: Path,
) -> None:
    from rota.scheduler.config import SchedulerConfig
    from rota.scheduler.leader import Scheduler
    from rota.store import open_store

    url = f"sqlite:///{tmp_path / 'rota.db'}"
    store = open_store(url)
    try:
        store.register_node(NodeSpec(id="silent", name="silent", slots=4, prefetch=0))
        sched = Scheduler(url, SchedulerConfig(failure_timeout=0.3, reap_every=60.0))
        sched.cycle(store)  # the first cycle reaps (nothing yet): the next is 60 s away
        assert {n.id for n in store.list_nodes([NodeState.LIVE])} == {"silent"}
        time.sleep(0.4)
        sched.cycle(store)  # the snapshot shows it past the timeout: reaped now
        assert {n.id for n in store.list_nodes([NodeState.DEAD])} == {"silent"}
    finally:
        store.close()
