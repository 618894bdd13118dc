"""The optional fast paths (``rota.store.fast_paths``): which stores offer them, and the
plain fallback (the basic methods composed), run on every store whether it offers the
capability or not. Every store offers some (complete_and_start and claim grants); the
others fall back to the plain compositions, which these tests run on every store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from rota.core.errors import LeaseLost
from rota.core.model import Assignment, Lease, NodeRecord, NodeSpec, NodeState
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState
from rota.store import Store
from rota.store import fast_paths as fast
from tests.store.contract.test_store_contract import TTL, job, leader, node, run_on


def test_which_stores_offer_fast_paths(store: Store) -> None:
    kind = store.url.split(":", 1)[0].split("+", 1)[0]  # redis+cluster, redis+sentinel: redis
    offers = isinstance(store, fast.FastPaths)
    assert offers, kind
    assert fast.reserves_slots(store) is (kind == "redis")
    assert fast.grants_claims(store)
    assert (fast.async_claims(store) is not None) is (kind == "redis")


def test_the_plain_complete_and_start(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()], lease)
    nxt = job(priority=3)
    store.submit([nxt])
    store.assign(lease, [Assignment(nxt.id, spec.id)])
    done = Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")
    accepted, started = fast.plain_complete_and_start(store, [done, done], spec.id, 1, TTL)
    # the same report twice is one report (idempotent): both accepted, the job ended once
    assert accepted == [True, True] and [s.id for s in started] == [nxt.id]
    assert len(store.job_attempts(r.id)) == 1
    assert started[0].state is JobState.RUNNING
    assert fast.plain_complete_and_start(store, [], spec.id, 0, TTL) == ([], [])


def test_the_plain_placement_snapshot_matches_the_stores_own(store: Store) -> None:
    lease = leader(store)
    spec = NodeSpec(id="n-plain", name="n", slots=1, prefetch=1)
    store.register_node(spec)
    store.submit([job(delay=0.01), *[job() for _ in range(4)]])
    time.sleep(0.05)
    plain = fast.plain_placement_snapshot(store, lease, 100, 1000, 1, False)
    assert plain.promoted == 1 and [n.id for n in plain.nodes] == [spec.id]
    assert plain.page_size == 2 and plain.pending == store.pending_jobs(2)
    own = fast.placement_snapshot(store, lease, 100, 1000, 1, False)
    assert (own.promoted, own.page_size, own.pending) == (0, 2, plain.pending)
    assert [n.id for n in own.nodes] == [spec.id]
    stale = Lease(lease.name, lease.holder, lease.token + 1, lease.expires_at, 0.0)
    with pytest.raises(LeaseLost):
        fast.plain_placement_snapshot(store, stale, 100, 1000, 1, False)


def test_snapshot_nodes_are_the_live_nodes_as_listed(store: Store) -> None:
    """A snapshot's nodes equal ``list_nodes([LIVE])`` as nodes register, beat, take load,
    register again with another spec, and leave (a store may keep specs between
    snapshots: the Redis store reads only states and loads when no node is new)."""
    lease = leader(store)

    def same() -> list[NodeRecord]:
        nodes = fast.placement_snapshot(store, lease, 100, 1000, 1, False).nodes
        assert nodes == store.list_nodes([NodeState.LIVE])
        return nodes

    a = NodeSpec(id="n-a", name="a", slots=2, prefetch=0, labels={"zone": "x"})
    store.register_node(a)
    assert [n.spec for n in same()] == [a]
    store.heartbeat(a.id, [], TTL)
    store.submit([job(resources={"cpu": 1.0})])
    a2 = NodeSpec(id="n-a", name="a", slots=3, prefetch=1, resources={"cpu": 4.0})
    store.register_node(a2)  # the same id again, with another spec
    assert [n.spec for n in same()] == [a2]
    b = NodeSpec(id="n-b", name="b", slots=1, prefetch=0)
    store.register_node(b)
    assert [n.spec for n in same()] == [a2, b]
    store.assign(lease, [Assignment(store.pending_jobs(1)[0].id, a2.id)])
    loaded = same()
    assert (loaded[0].assigned, loaded[0].used) == (1, {"cpu": 1.0})
    store.set_node_state(b.id, NodeState.DRAINING)
    assert [n.id for n in same()] == [a2.id]


def test_the_plain_wait_only_waits(store: Store) -> None:
    lease = leader(store)
    fast.plain_wait_for_pending_snapshot(store, 0.01)  # returns nothing, raises nothing
    if not isinstance(store, fast.FastPaths):
        assert fast.wait_for_pending_snapshot(store, 0.01, lease, 100, 100, 10) is None
        fast.reserve_slots(store, lease, {"default": ["nobody"]})  # nothing to do: no error


def claims_granted(store: Store) -> None:
    if not fast.grants_claims(store):
        pytest.skip(f"{type(store).__name__} does not grant claims")


def test_granted_nodes_claim_plain_pending_jobs_in_placement_order(store: Store) -> None:
    claims_granted(store)
    lease = leader(store)
    spec, other = node(queues=("default", "q2")), node("other", queues=("q3",))
    store.register_node(spec)
    store.register_node(other)
    store.submit([job(priority=0), job(priority=2, queue="q2"), job(priority=1)])
    assert store.start_jobs(spec.id, 4, TTL) == []  # no grant yet: placement only
    fast.grant_claims(store, lease, {spec.id: ("default", "q2"), other.id: ("q3",)})
    assert store.start_jobs(other.id, 4, TTL) == []  # not its queues
    started = store.start_jobs(spec.id, 2, TTL)
    assert [(r.priority, r.state, r.node_id, r.attempts) for r in started] == [
        (2, JobState.RUNNING, spec.id, 1),
        (1, JobState.RUNNING, spec.id, 1),
    ]
    assert all(r.token >= 1 for r in started)  # a new token, as a placement gives (per job)
    assert started[0].lease_expires_at is not None and started[0].started_at is not None
    # the claim is a start like any other: its outcome is accepted under its token
    done = Outcome(started[0].id, started[0].token, OutcomeKind.SUCCEEDED, result="1")
    accepted, nxt = fast.complete_and_start(store, [done], spec.id, 4, TTL)
    assert accepted == [True] and [r.priority for r in nxt] == [0]
    assert store.pending_jobs(10) == []


def test_a_claim_stops_at_the_first_job_that_needs_placement(store: Store) -> None:
    claims_granted(store)
    lease = leader(store)
    spec = node(resources={"gpu": 1.0})
    store.register_node(spec)
    fast.grant_claims(store, lease, {spec.id: ("default",)})
    plain, needy, later = job(priority=3), job(priority=2, resources={"gpu": 1.0}), job()
    store.submit([plain, needy, later])
    assert [r.id for r in store.start_jobs(spec.id, 4, TTL)] == [plain.id]
    assert [p.id for p in store.pending_jobs(10)] == [needy.id, later.id]
    # assigned jobs come first; the claim fills what is left, behind them
    store.assign(lease, [Assignment(needy.id, spec.id)])
    assert [r.id for r in store.start_jobs(spec.id, 4, TTL)] == [needy.id, later.id]


def test_a_grant_ends_with_its_leadership_and_with_the_node(store: Store) -> None:
    claims_granted(store)
    lease = leader(store, ttl=0.3)
    spec = node()
    store.register_node(spec)
    fast.grant_claims(store, lease, {spec.id: ("default",)})
    store.submit([job(), job(), job()])
    store.set_node_state(spec.id, NodeState.DRAINING)
    assert store.start_jobs(spec.id, 1, TTL) == []  # a draining node takes no new work
    store.set_node_state(spec.id, NodeState.LIVE)
    assert len(store.start_jobs(spec.id, 1, TTL)) == 1
    time.sleep(0.4)  # the lease expired: no current leader, no current grant
    assert store.start_jobs(spec.id, 1, TTL) == []
    newer = leader(store, "sched-b")  # a new leader: the old grant does not come back
    assert store.start_jobs(spec.id, 1, TTL) == []
    with pytest.raises(LeaseLost):
        fast.grant_claims(store, lease, {spec.id: ("default",)})
    fast.grant_claims(store, newer, {spec.id: ("default",)})
    assert len(store.start_jobs(spec.id, 1, TTL)) == 1


@pytest.mark.parametrize(
    "needs",
    [
        {"resources": {"cpu": 1.0}},
        {"labels": {"zone": "x"}},
        {"affinity": {"zone": "x"}},
        {"concurrency_key": "k", "concurrency_limit": 1},
        {"rate_limit": "1/60"},
    ],
    ids=["resources", "labels", "affinity", "concurrency", "rate"],
)
def test_a_grant_never_starts_a_job_placement_must_judge(
    store: Store, needs: dict[str, Any]
) -> None:
    """A job with resources, labels, affinity or a limit is never claimed, even when the
    node could run it, and no job behind it is claimed either (no priority jump)."""
    claims_granted(store)
    lease = leader(store)
    spec = node(resources={"cpu": 8.0}, labels={"zone": "x"})
    store.register_node(spec)
    fast.grant_claims(store, lease, {spec.id: ("default",)})
    first, needy, behind = job(priority=5), job(priority=4, **needs), job(priority=1)
    store.submit([behind, needy, first])
    assert [r.id for r in store.start_jobs(spec.id, 4, TTL)] == [first.id]
    assert [p.id for p in store.pending_jobs(10)] == [needy.id, behind.id]
    assert store.get_job(needy.id).state is JobState.PENDING  # type: ignore[union-attr]


def test_a_grant_never_overtakes_another_queue(store: Store) -> None:
    """The head of pending belongs to a queue the node does not serve: the node claims
    nothing, though jobs of its own queue wait behind (placement order is global)."""
    claims_granted(store)
    lease = leader(store)
    spec, other = node(queues=("default",)), node("o", queues=("q2",))
    store.register_node(spec)
    store.register_node(other)
    fast.grant_claims(store, lease, {spec.id: ("default",), other.id: ("q2",)})
    theirs, mine = job(priority=3, queue="q2"), job(priority=1)
    store.submit([mine, theirs])
    assert store.start_jobs(spec.id, 4, TTL) == []
    assert [r.id for r in store.start_jobs(other.id, 1, TTL)] == [theirs.id]
    assert [r.id for r in store.start_jobs(spec.id, 4, TTL)] == [mine.id]


def test_a_grant_fills_only_the_room_asked_for_and_never_twice(
    store: Store, connect: Callable[[], Store]
) -> None:
    """Two nodes claiming from one backlog take disjoint jobs, each no more than its limit."""
    claims_granted(store)
    lease = leader(store)
    a, b = node("a"), node("b")
    store.register_node(a)
    store.register_node(b)
    fast.grant_claims(store, lease, {a.id: ("default",), b.id: ("default",)})
    jobs = [job() for _ in range(7)]
    store.submit(jobs)
    other = connect()
    got_a = store.start_jobs(a.id, 3, TTL)
    got_b = other.start_jobs(b.id, 3, TTL)
    assert len(got_a) == 3 and len(got_b) == 3
    assert not {r.id for r in got_a} & {r.id for r in got_b}
    assert [r.id for r in got_a + got_b] == [j.id for j in jobs[:6]]  # FIFO, as placed


def test_concurrency_1_drains_a_backlog_one_call_per_job(store: Store) -> None:
    """A one-slot worker reports each job and gets the next in the same call, with no
    scheduler cycle (no assign) in between: the fast path ``--concurrency 1`` relies on."""
    claims_granted(store)
    lease = leader(store)
    spec = node(slots=1)
    store.register_node(spec)
    fast.grant_claims(store, lease, {spec.id: ("default",)})
    backlog = [job("t", i) for i in range(5)]
    store.submit(backlog)
    (cur,) = store.start_jobs(spec.id, 1, TTL)
    order = [cur.id]
    for _ in range(len(backlog)):
        done = Outcome(cur.id, cur.token, OutcomeKind.SUCCEEDED, result="1")
        accepted, nxt = fast.complete_and_start(store, [done], spec.id, 1, TTL)
        assert accepted == [True]
        if not nxt:
            break
        (cur,) = nxt
        order.append(cur.id)
    assert order == [j.id for j in backlog]
    assert all(store.get_job(j.id).state is JobState.SUCCEEDED for j in backlog)  # type: ignore[union-attr]
