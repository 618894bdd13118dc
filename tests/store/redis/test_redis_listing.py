"""Ordering, listing and odd values on Redis: big batches, paging, pending members, float
drift of resource usage, a node leaving with jobs."""

from __future__ import annotations

import random
from typing import cast

import pytest

from rota.core.model import Assignment, NodeState
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.core.states import JobState

pytest.importorskip("redis")

import redis

from rota.store.redis.store import RedisStore
from tests.store.redis.helpers import TTL, job, leader, node


# ---- ordering, listing, odd values ---------------------------------------------------------
def test_big_batch_order_and_paging(store: RedisStore) -> None:
    jobs = [job(i, priority=random.choice([-(2**31), -3, 0, 0, 7, 2**31 - 1])) for i in range(3000)]
    store.submit(jobs)
    expected = [j.id for j in sorted(jobs, key=lambda j: -j.priority)]  # stable: FIFO ties
    got: list[str] = []
    after = None
    while True:
        page = store.pending_jobs(701, after)
        if not page:
            break
        got += [p.id for p in page]
        after = (page[-1].priority, page[-1].seq)
    assert got == expected


def test_list_jobs_filters_across_pages(store: RedisStore) -> None:
    jobs = [job(i, queue="a" if i % 3 else "b") for i in range(1300)]
    store.submit(jobs)
    b = [j.id for j in jobs if j.queue == "b"]
    assert [r.id for r in store.list_jobs(queue="b", limit=1000)] == b[::-1]
    assert [r.id for r in store.list_jobs(limit=5)] == [j.id for j in jobs[::-1][:5]]
    assert len(store.list_jobs(state=JobState.PENDING, queue="a", limit=2000)) == 1300 - len(b)


def test_pending_jobs_are_listed_newest_first_across_priorities(store: RedisStore) -> None:
    """Pending jobs have no index by seq: list_jobs reads "pending" one priority band at a
    time (pending_newest) and must still give the newest first, page after page."""
    prios = [-(2**31), -3, 0, 7, 2**31 - 1]
    jobs = [job(i, priority=random.choice(prios), queue="a" if i % 4 else "b") for i in range(1200)]
    for i in range(0, len(jobs), 100):  # several batches: seq order is submission order
        store.submit(jobs[i : i + 100])
    newest = [j.id for j in jobs[::-1]]
    assert [r.id for r in store.list_jobs(state=JobState.PENDING, limit=37)] == newest[:37]
    assert [r.id for r in store.list_jobs(state=JobState.PENDING, limit=5000)] == newest
    b = [j.id for j in jobs[::-1] if j.queue == "b"]
    assert [r.id for r in store.list_jobs(state=JobState.PENDING, queue="b", limit=250)] == b[:250]
    # once some are assigned and running, the three listings split them between them
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    placed = store.pending_jobs(30)
    store.assign(lease, [Assignment(p.id, spec.id) for p in placed])
    running = {r.id for r in store.start_jobs(spec.id, 10, TTL)}
    assigned = {p.id for p in placed} - running
    by_state = {
        st: [r.id for r in store.list_jobs(state=st, limit=5000)]
        for st in (JobState.PENDING, JobState.ASSIGNED, JobState.RUNNING)
    }
    assert (
        set(by_state[JobState.RUNNING]) == running and set(by_state[JobState.ASSIGNED]) == assigned
    )
    assert by_state[JobState.PENDING] == [i for i in newest if i not in running | assigned]
    for ids in by_state.values():  # newest first in each
        seqs = [r.seq for r in store.get_jobs(ids)]
        assert seqs == sorted(seqs, reverse=True)
    assert [r.id for r in store.list_jobs(state=JobState.RUNNING, node_id="other")] == []


def test_the_scheduler_never_reads_job_hashes_to_place(store: RedisStore, raw: redis.Redis) -> None:
    """Placement reads everything it needs from the "pending" members, and assign takes the
    member it was given: with the placement fields gone from the job hashes, the snapshot
    and the assignment still see them (no HMGET per pending job)."""
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    jobs = [
        job(i, resources={"cpu": 1}, labels={"z": "eu"}, concurrency_key="k") for i in range(50)
    ]
    store.submit(jobs)
    for j in jobs:
        raw.hdel(store.key("job", j.id), "resources", "labels", "concurrency_key", "queue")
    page = store.placement_snapshot(lease, 100, 100, 100, True).pending
    assert len(page) == 50 and page[0].resources == {"cpu": 1.0} and page[0].labels == {"z": "eu"}
    assert page[0].concurrency_key == "k" and page[0].queue == "default"
    assert store.assign(lease, [Assignment(p.id, spec.id) for p in page]) == 50
    assert store.list_nodes()[0].used == {"cpu": 50.0}
    assert store.concurrency_usage(["k"]) == {"k": 50}
    assert store.count_jobs() == {("default", JobState.ASSIGNED): 50}


def test_pending_members_of_an_older_rota_are_rewritten(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A store written by an older rota has "pending" members rank..id without the
    placement fields: they are rewritten as they are read, and a cancelled one is dropped."""
    a, b = job("a", resources={"cpu": 2}), job("b")
    store.submit([a, b])
    key = store.key("pending")
    members = cast(list[str], raw.zrange(key, 0, -1))
    for m in members:
        raw.zrem(key, m)
        raw.zadd(key, {m.split("\0")[0]: 0})  # the old form
    raw.hset(store.key("job", b.id), "state", "cancelled")  # cancelled meanwhile
    (p,) = store.pending_jobs(10)
    assert p.id == a.id and p.resources == {"cpu": 2.0}
    members = cast(list[str], raw.zrange(key, 0, -1))
    assert [m.split("\0")[0][20:] for m in members] == [a.id]
    assert "\0" in members[0]


def test_odd_values_survive_the_lua_roundtrip(store: RedisStore) -> None:
    spec = node()
    store.register_node(spec)
    weird = 'nul\x00 tab\t quote" backslash\\ emoji\U0001f600 \u2028 ]]--'
    j = job(weird, {"k": [weird, 1e308, -0.0, 2**63 - 1]}, timeout=0.1, eta=None)
    store.submit([j])
    store.assign(leader(store), [Assignment(j.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, TTL)
    result = encode_arguments([weird], {})
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result=result)])
    rec = store.get_job(j.id)
    assert rec is not None and rec.payload == j.payload and rec.result == result
    assert rec.arguments() == ([weird, {"k": [weird, 1e308, -0.0, 2**63 - 1]}], {})
    assert rec.timeout == 0.1


def test_a_node_that_leaves_with_jobs_has_them_taken_back_by_reap(store: RedisStore) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    running, waiting = job(retries=1, resources={"cpu": 0.1}), job(resources={"cpu": 0.2})
    store.submit([running, waiting])
    store.assign(lease, [Assignment(running.id, spec.id)])
    store.start_jobs(spec.id, 1, TTL)
    store.assign(lease, [Assignment(waiting.id, spec.id)])
    (n,) = store.list_nodes()
    assert (n.assigned, n.running) == (1, 1) and n.used == {"cpu": pytest.approx(0.3)}
    store.set_node_state(spec.id, NodeState.STOPPED)
    report = store.reap(lease, 60)
    assert (report.dead_nodes, report.requeued, report.retried) == ((), 1, 1)
    (n,) = store.list_nodes()
    assert (n.state, n.in_flight, n.used) == (NodeState.STOPPED, 0, {})
    assert store.reap(lease, 60).requeued == 0  # done once


def test_resource_usage_returns_to_zero_without_float_drift(store: RedisStore) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    jobs = [job(resources={"cpu": 0.1, "mem": 1e9 / 3}) for _ in range(30)]
    store.submit(jobs)
    store.assign(lease, [Assignment(j.id, spec.id) for j in jobs])
    started = store.start_jobs(spec.id, 30, TTL)
    (n,) = store.list_nodes()
    assert abs(n.used["cpu"] - 3.0) < 1e-9
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED) for r in started[:29]])
    (n,) = store.list_nodes()
    assert abs(n.used["cpu"] - 0.1) < 1e-9
    store.complete([Outcome(started[29].id, started[29].token, OutcomeKind.FATAL)])
    (n,) = store.list_nodes()
    assert n.used == {} and n.in_flight == 0
