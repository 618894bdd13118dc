"""Reserved slots on Redis: a plain job submitted while nothing is pending is assigned in
the submit itself, to a live node the leader reserved (``Store.reserve_slots``).

The rules: plain jobs only (no resources, labels, affinity or limits; due now; no
parents); only while ``pending`` is empty; never to a node that is no longer live; each
reserved slot used once; the leader's next snapshot drops them; a stale leader cannot
reserve.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rota.core.errors import LeaseLost
from rota.core.model import Lease, NewJob, NodeSpec, NodeState
from rota.core.payload import encode_arguments
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE
from tests.stores import store_url

pytest.importorskip("redis")

from rota.store.redis.store import RedisStore

TTL = 30.0


def job(**extra: Any) -> NewJob:
    return NewJob(
        id=uuid.uuid4().hex,
        task="t",
        queue=extra.pop("queue", "default"),
        payload=encode_arguments([], {}),
        **extra,
    )


def node(name: str = "n", queues: tuple[str, ...] = ("default",)) -> NodeSpec:
    return NodeSpec(
        id=f"{name}-{uuid.uuid4().hex[:8]}", name=name, slots=4, prefetch=0, queues=queues
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisStore]:
    with store_url("redis", tmp_path) as url:
        s = RedisStore(url)
        yield s
        s.close()


@pytest.fixture
def lease(store: RedisStore) -> Lease:
    got = store.acquire_lease(SCHEDULER_LEASE, "sched", TTL)
    assert got is not None
    return got


def reserved_node(store: RedisStore, lease: Lease, slots: int = 4) -> NodeSpec:
    """A registered node with ``slots`` slots of queue "default" reserved on it."""
    spec = node()
    store.register_node(spec)
    store.reserve_slots(lease, {"default": [spec.id] * slots})
    return spec


def states(store: RedisStore, jobs: list[NewJob]) -> list[tuple[JobState, str | None]]:
    recs = {r.id: r for r in store.get_jobs([j.id for j in jobs])}
    return [(recs[j.id].state, recs[j.id].node_id) for j in jobs]


def test_a_plain_job_takes_a_reserved_slot_and_starts_without_a_placement(
    store: RedisStore, lease: Lease
) -> None:
    a, b = node("a"), node("b")
    store.register_node(a)
    store.register_node(b)
    store.reserve_slots(lease, {"default": [b.id, a.id]})
    first, second, third = job(), job(), job()
    store.submit([first])
    store.submit([second, third])
    # in the order reserved, each slot once; then pending, as without reservations
    assert states(store, [first, second, third]) == [
        (JobState.ASSIGNED, b.id),
        (JobState.ASSIGNED, a.id),
        (JobState.PENDING, None),
    ]
    started = store.start_jobs(b.id, 4, TTL)
    assert [r.id for r in started] == [first.id] and started[0].token > 0
    counts = store.count_jobs()
    assert counts[("default", JobState.ASSIGNED)] == 1
    assert counts[("default", JobState.RUNNING)] == 1
    assert counts[("default", JobState.PENDING)] == 1
    # the node's wake-up list was pushed: an idle node's wait returns at once
    began = time.monotonic()
    store.wait_for_assignments(a.id, 5.0)
    assert time.monotonic() - began < 2.0


def test_only_plain_jobs_due_now_use_reserved_slots(store: RedisStore, lease: Lease) -> None:
    spec = reserved_node(store, lease, 8)
    parent = job()
    store.submit([parent])
    special = [
        job(resources={"cpu": 1.0}),
        job(labels={"zone": "a"}),
        job(affinity={"zone": "a"}),
        job(concurrency_key="k", concurrency_limit=1),
        job(rate_limit="5/1"),
        job(delay=60.0),
        job(depends_on=(parent.id,)),
        job(queue="other"),  # no slot reserved for this queue
    ]
    for j in special:
        store.submit([j])
    got = [s for s, _ in states(store, special)]
    assert JobState.ASSIGNED not in got
    assert states(store, [parent]) == [(JobState.ASSIGNED, spec.id)]


def test_no_reserved_slot_while_a_job_is_pending(store: RedisStore, lease: Lease) -> None:
    spec = node()
    store.register_node(spec)
    waiting = job(resources={"gpu": 1.0})  # pending: nothing can run it
    store.submit([waiting])
    store.reserve_slots(lease, {"default": [spec.id] * 4})
    late = job()
    store.submit([late])
    assert states(store, [late]) == [(JobState.PENDING, None)]
    # in one batch: once a job of the batch goes pending, the later ones do too
    store.cancel(waiting.id)
    store.cancel(late.id)
    batch = [job(), job(resources={"cpu": 1.0}), job()]
    store.submit(batch)
    assert [s for s, _ in states(store, batch)] == [
        JobState.ASSIGNED,
        JobState.PENDING,
        JobState.PENDING,
    ]


def test_a_batch_of_mixed_priorities_is_left_to_the_scheduler(
    store: RedisStore, lease: Lease
) -> None:
    reserved_node(store, lease)
    batch = [job(), job(priority=5)]  # placed by priority, not in the order given
    store.submit(batch)
    assert [s for s, _ in states(store, batch)] == [JobState.PENDING, JobState.PENDING]
    same = [job(priority=5), job(priority=5)]
    store.cancel(batch[0].id)
    store.cancel(batch[1].id)
    store.submit(same)
    assert [s for s, _ in states(store, same)] == [JobState.ASSIGNED, JobState.ASSIGNED]


def test_a_reserved_node_that_is_no_longer_live_is_skipped(store: RedisStore, lease: Lease) -> None:
    draining, gone, live = node("d"), node("g"), node("l")
    for spec in (draining, gone, live):
        store.register_node(spec)
    store.reserve_slots(lease, {"default": [draining.id, gone.id, live.id]})
    store.set_node_state(draining.id, NodeState.DRAINING)
    store.set_node_state(gone.id, NodeState.STOPPED)
    j, k = job(), job()
    store.submit([j, k])
    assert states(store, [j, k]) == [(JobState.ASSIGNED, live.id), (JobState.PENDING, None)]


def test_the_next_snapshot_drops_reservations_and_a_stale_leader_cannot_reserve(
    store: RedisStore, lease: Lease
) -> None:
    spec = reserved_node(store, lease)
    store.placement_snapshot(lease, 100, 100, 10, False)
    j = job()
    store.submit([j])
    assert states(store, [j]) == [(JobState.PENDING, None)]
    began = time.monotonic()  # a job that went pending wakes the scheduler at once
    store.wait_for_pending(5.0)
    assert time.monotonic() - began < 1.0
    stale = Lease(lease.name, lease.holder, lease.token + 1, lease.expires_at, 0.0)
    with pytest.raises(LeaseLost):
        store.reserve_slots(stale, {"default": [spec.id]})
    # with the wait: reserved before the wait, dropped by the snapshot taken as it wakes
    store.cancel(j.id)
    store.wait_for_pending(0)
    got = store.wait_for_pending_snapshot(0.05, stale, 100, 100, 10, reserve={"default": [spec.id]})
    assert got is None  # the stale lease reserved nothing and got no snapshot
    k = job()
    store.submit([k])
    assert states(store, [k]) == [(JobState.PENDING, None)]


def test_reservations_made_with_the_wait_serve_a_submit_that_need_not_wake_it(
    store: RedisStore, lease: Lease
) -> None:
    spec = node()
    store.register_node(spec)
    store.wait_for_pending(0)
    producer = RedisStore(store.url)
    try:
        j = job()
        timer = threading.Timer(0.2, lambda: producer.submit([j]))
        timer.start()
        began = time.monotonic()
        snap = store.wait_for_pending_snapshot(
            1.0, lease, 100, 100, 10, reserve={"default": [spec.id]}
        )
        timer.join()
        # the job took the reserved slot: the submit did not wake the scheduler's wait,
        # whose snapshot (taken when it timed out) sees the job on the node
        assert time.monotonic() - began >= 0.9
        assert snap is not None
        nodes, page = snap.nodes, snap.pending
        assert page == []  # nothing left to place: the submit placed it
        assert [(n.id, n.assigned) for n in nodes] == [(spec.id, 1)]
        assert states(store, [j]) == [(JobState.ASSIGNED, spec.id)]
    finally:
        producer.close()


def test_reservations_of_several_queues(store: RedisStore, lease: Lease) -> None:
    both = node("b", ("default", "mail"))
    store.register_node(both)
    store.reserve_slots(lease, {"default": [both.id], "mail": [both.id], "empty": []})
    d, m, m2 = job(), job(queue="mail"), job(queue="mail")
    store.submit([d])
    store.submit([m])
    store.submit([m2])
    assert states(store, [d, m, m2]) == [
        (JobState.ASSIGNED, both.id),
        (JobState.ASSIGNED, both.id),
        (JobState.PENDING, None),
    ]
