"""The store contract for coordinators that mint the leader's token outside the store
(ZooKeeper's zxid, ``Store.adopt_lease``) and name dead nodes (``Store.reap_nodes``):
every store must refuse a write under a token older than the newest it has seen."""

from __future__ import annotations

import time

import pytest

from rota.core.errors import LeaseLost
from rota.core.model import Assignment, NodeState, ScheduleRecord
from rota.core.periodic import tick_job_id
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, Store
from tests.store.contract.test_store_contract import TTL, job, node, run_on

# zxids as ZooKeeper hands them out: epoch << 32 | counter.
OLD = (3 << 32) | 17
NEW = (4 << 32) | 2


def test_adopt_takes_with_a_higher_token_renews_and_refuses_an_older_one(store: Store) -> None:
    a = store.adopt_lease(SCHEDULER_LEASE, "a", OLD, TTL)
    assert a is not None and (a.holder, a.token) == ("a", OLD)
    renewed = store.adopt_lease(SCHEDULER_LEASE, "a", OLD, TTL)
    assert renewed is not None and renewed.token == OLD and renewed.acquired_at == a.acquired_at
    # A newer leader takes it at once, though the old lease has not expired.
    b = store.adopt_lease(SCHEDULER_LEASE, "b", NEW, TTL)
    assert b is not None and (b.holder, b.token) == ("b", NEW)
    # The old leader can neither renew nor take it back; nobody else can use b's token.
    assert store.adopt_lease(SCHEDULER_LEASE, "a", OLD, TTL) is None
    assert store.adopt_lease(SCHEDULER_LEASE, "c", NEW, TTL) is None
    assert store.adopt_lease(SCHEDULER_LEASE, "c", NEW - 1, TTL) is None
    current = store.get_lease(SCHEDULER_LEASE)
    assert current is not None and (current.holder, current.token) == ("b", NEW)


def test_a_write_with_an_older_token_than_the_newest_seen_is_refused(store: Store) -> None:
    spec = node("w")
    store.register_node(spec)
    old = store.adopt_lease(SCHEDULER_LEASE, "a", OLD, TTL)
    assert old is not None
    j1, j2 = job(), job()
    store.submit([j1, j2])
    assert store.assign(old, [Assignment(j1.id, spec.id)]) == 1  # accepted while newest
    new = store.adopt_lease(SCHEDULER_LEASE, "b", NEW, TTL)
    assert new is not None
    # Every fenced write of the paused leader is refused, exactly as a stale lease-holder's.
    with pytest.raises(LeaseLost):
        store.assign(old, [Assignment(j2.id, spec.id)])
    with pytest.raises(LeaseLost):
        store.promote_due(old, 10)
    with pytest.raises(LeaseLost):
        store.reap(old, 5.0)
    with pytest.raises(LeaseLost):
        store.resolve_dependencies(old, 10)
    with pytest.raises(LeaseLost):
        store.reap_nodes(old, [spec.id], 5.0)
    # Nothing it tried changed the store.
    (r2,) = store.get_jobs([j2.id])
    assert r2.state is JobState.PENDING
    assert {n.id: n.state for n in store.list_nodes()}[spec.id] is NodeState.LIVE
    assert store.assign(new, [Assignment(j2.id, spec.id)]) == 1


def test_a_periodic_tick_under_an_older_token_is_refused(store: Store) -> None:
    store.put_schedules([ScheduleRecord(name="every", spec="{}", last_tick=None)])
    old = store.adopt_lease(SCHEDULER_LEASE, "a", OLD, TTL)
    assert old is not None
    assert store.adopt_lease(SCHEDULER_LEASE, "b", NEW, TTL) is not None
    tick = float(int(time.time()))
    tick_job = job()
    tick_job.id = tick_job_id("every", tick)
    with pytest.raises(LeaseLost):
        store.fire_schedule(old, "every", tick, tick_job)
    assert store.get_jobs([tick_job.id]) == []


def test_store_leases_continue_above_an_adopted_token(store: Store) -> None:
    """Going back from ZooKeeper to store leases never reuses a token."""
    a = store.adopt_lease(SCHEDULER_LEASE, "a", NEW, 0.3)
    assert a is not None
    time.sleep(0.4)
    b = store.acquire_lease(SCHEDULER_LEASE, "b", TTL)
    assert b is not None and b.token > NEW


def test_reap_nodes_declares_named_nodes_dead_and_takes_their_jobs_back(store: Store) -> None:
    lease = store.adopt_lease(SCHEDULER_LEASE, "a", OLD, TTL)
    assert lease is not None
    gone, alive = node("gone"), node("alive")
    store.register_node(gone)
    store.register_node(alive)
    running = run_on(store, gone, [job(retries=1), job(retries=0)], lease)
    assigned = job()
    store.submit([assigned])
    assert store.assign(lease, [Assignment(assigned.id, gone.id)]) == 1
    # Heartbeats are fresh: only the coordinator knows the node is dead.
    report = store.reap_nodes(lease, [gone.id], 60.0)
    assert gone.id in report.dead_nodes and alive.id not in report.dead_nodes
    assert (report.requeued, report.retried, report.dead_jobs) == (1, 1, 1)
    states = {r.id: r for r in store.get_jobs([*(r.id for r in running), assigned.id])}
    assert states[assigned.id].state is JobState.PENDING
    assert states[assigned.id].attempts == 0
    assert states[running[0].id].state is JobState.PENDING
    assert states[running[0].id].attempts == 1
    assert states[running[1].id].state is JobState.DEAD
    nodes = {n.id: n.state for n in store.list_nodes()}
    assert nodes[gone.id] is NodeState.DEAD and nodes[alive.id] is NodeState.LIVE
    assert not store.heartbeat(gone.id, [], TTL).alive
