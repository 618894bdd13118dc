"""The store contract: every store (SQLite, Redis, PostgreSQL) must pass every test here."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from rota.core.errors import LeaseLost, SubmitError
from rota.core.model import Assignment, JobRecord, Lease, NewJob, NodeSpec, NodeState
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, Store
from rota.store import fast_paths as fast
from rota.store.contract import CLAIM_PREFIX

TTL = 30.0


def job(
    task: str = "t",
    *args: object,
    queue: str = "default",
    priority: int = 0,
    retries: int = 0,
    **extra: object,
) -> NewJob:
    return NewJob(
        id=uuid.uuid4().hex,
        task=task,
        queue=queue,
        payload=encode_arguments(list(args), {}),
        priority=priority,
        max_attempts=retries + 1,
        **extra,  # type: ignore[arg-type]
    )


def node(name: str = "n", slots: int = 4, **extra: Any) -> NodeSpec:
    return NodeSpec(
        id=f"{name}-{uuid.uuid4().hex[:8]}", name=name, slots=slots, prefetch=0, **extra
    )


def leader(store: Store, holder: str = "sched-a", ttl: float = TTL) -> Lease:
    lease = store.acquire_lease(SCHEDULER_LEASE, holder, ttl)
    assert lease is not None
    return lease


def run_on(
    store: Store, spec: NodeSpec, jobs: Sequence[NewJob], lease: Lease | None = None
) -> list[JobRecord]:
    """Submit, assign to ``spec`` and start ``jobs``; return the started records."""
    store.submit(jobs)
    lease = lease or leader(store)
    assert store.assign(lease, [Assignment(j.id, spec.id) for j in jobs]) == len(jobs)
    started = store.start_jobs(spec.id, len(jobs), TTL)
    assert len(started) == len(jobs)
    return started


def state_of(store: Store, job_id: str) -> JobState:
    rec = store.get_job(job_id)
    assert rec is not None
    return rec.state


# ---- submit and read ------------------------------------------------------------------
def test_submit_roundtrip_keeps_every_field(store: Store) -> None:
    j = NewJob(
        id=uuid.uuid4().hex,
        task="images.resize",
        queue="images",
        payload=encode_arguments(["a.png", 200], {"fmt": "ünï\u2603"}),
        priority=7,
        max_attempts=4,
        timeout=12.5,
        resources={"cpu": 2.0, "mem": 8e9},
        labels={"zone": "eu"},
        affinity={"disk": "ssd"},
        backoff_base=0.5,
        backoff_max=10.0,
    )
    before = time.time()
    assert store.submit([j]) == [j.id]
    rec = store.get_job(j.id)
    assert rec is not None
    assert (rec.task, rec.queue, rec.priority, rec.max_attempts, rec.timeout) == (
        "images.resize",
        "images",
        7,
        4,
        12.5,
    )
    assert rec.arguments() == (["a.png", 200], {"fmt": "ünï\u2603"})
    assert rec.resources == {"cpu": 2.0, "mem": 8e9}
    assert rec.labels == {"zone": "eu"} and rec.affinity == {"disk": "ssd"}
    assert (rec.backoff_base, rec.backoff_max) == (0.5, 10.0)
    assert rec.state is JobState.PENDING and rec.attempts == 0 and rec.token == 0
    assert rec.node_id is None and rec.result is None and rec.error is None
    assert abs(rec.created_at - before) < 5  # the store's clock, close to ours here


def test_get_jobs_keeps_order_and_skips_unknown(store: Store) -> None:
    jobs = [job() for _ in range(5)]
    store.submit(jobs)
    asked = [jobs[3].id, "nope", jobs[0].id, jobs[4].id]
    assert [r.id for r in store.get_jobs(asked)] == [jobs[3].id, jobs[0].id, jobs[4].id]
    assert store.get_job("missing") is None
    assert store.get_jobs([]) == []


def test_bulk_submit_is_one_batch_in_order(store: Store) -> None:
    jobs = [job("t", i) for i in range(2000)]
    assert store.submit(jobs) == [j.id for j in jobs]
    assert store.count_jobs() == {("default", JobState.PENDING): 2000}


def test_hostile_names_and_values_are_stored_verbatim(store: Store) -> None:
    nasty = "x'; DROP TABLE jobs; -- \" ]] redis.call('FLUSHALL') {rota}:*"
    j = job(nasty, nasty, {"k": nasty}, queue="q:weird-1.x")
    store.submit([j])
    rec = store.get_job(j.id)
    assert rec is not None and rec.task == nasty and rec.queue == "q:weird-1.x"
    assert rec.arguments() == ([nasty, {"k": nasty}], {})
    assert [r.id for r in store.list_jobs(task=nasty)] == [j.id]


def test_delayed_and_eta_jobs_wait_then_promote(store: Store) -> None:
    lease = leader(store)
    later = job(delay=0.3)
    far = job(eta=store.now() + 3600)
    past = job(eta=store.now() - 10)
    store.submit([later, far, past])
    assert state_of(store, later.id) is JobState.SCHEDULED
    assert state_of(store, far.id) is JobState.SCHEDULED
    assert state_of(store, past.id) is JobState.PENDING
    assert store.promote_due(lease, 100) == 0
    time.sleep(0.45)
    assert store.promote_due(lease, 100) == 1
    assert state_of(store, later.id) is JobState.PENDING
    assert state_of(store, far.id) is JobState.SCHEDULED


def test_pending_order_is_priority_then_fifo_with_paging(store: Store) -> None:
    jobs = [job(priority=p) for p in (0, 5, 0, 9, 5, -1, 9)]
    for j in jobs:  # one by one: submission order is FIFO order
        store.submit([j])
    expected = [jobs[i].id for i in (3, 6, 1, 4, 0, 2, 5)]
    assert [p.id for p in store.pending_jobs(100)] == expected
    first = store.pending_jobs(3)
    rest = store.pending_jobs(100, after=(first[-1].priority, first[-1].seq))
    assert [p.id for p in first + rest] == expected
    p = store.pending_jobs(1)[0]
    assert p.priority == 9 and p.queue == "default" and p.resources == {}


def test_list_and_count_jobs_filter(store: Store) -> None:
    a = [job("a", queue="q1") for _ in range(3)]
    b = [job("b", queue="q2") for _ in range(2)]
    store.submit(a)
    store.submit(b)
    assert store.count_jobs() == {("q1", JobState.PENDING): 3, ("q2", JobState.PENDING): 2}
    assert [r.id for r in store.list_jobs(queue="q2")] == [b[1].id, b[0].id]  # newest first
    assert len(store.list_jobs(task="a", state=JobState.PENDING)) == 3
    assert store.list_jobs(state=JobState.DEAD) == []
    assert len(store.list_jobs(limit=2)) == 2


# ---- leases and fencing ----------------------------------------------------------------
def test_lease_acquire_renew_expire_and_takeover(store: Store) -> None:
    a = store.acquire_lease("L", "a", 0.4)
    assert a is not None and a.holder == "a"
    assert store.acquire_lease("L", "b", 0.4) is None
    renewed = store.acquire_lease("L", "a", 0.4)
    assert renewed is not None and renewed.token == a.token and renewed.expires_at >= a.expires_at
    got = store.get_lease("L")
    assert got is not None and got.holder == "a"
    time.sleep(0.5)
    assert store.get_lease("L") is None
    b = store.acquire_lease("L", "b", 5)
    assert b is not None and b.holder == "b" and b.token > a.token
    store.release_lease(b)
    c = store.acquire_lease("L", "c", 5)
    assert c is not None and c.token > b.token


def test_fenced_operations_refuse_a_stale_leader(store: Store) -> None:
    old = leader(store, "a", 0.3)
    time.sleep(0.4)
    new = leader(store, "b")
    spec = node()
    store.register_node(spec)
    j = job()
    store.submit([j])
    with pytest.raises(LeaseLost):
        store.assign(old, [Assignment(j.id, spec.id)])
    with pytest.raises(LeaseLost):
        store.promote_due(old, 10)
    with pytest.raises(LeaseLost):
        store.reap(old, 5.0)
    assert state_of(store, j.id) is JobState.PENDING
    assert store.assign(new, [Assignment(j.id, spec.id)]) == 1


# ---- nodes and the job flow -------------------------------------------------------------
def test_register_and_list_nodes_with_load(store: Store) -> None:
    spec = node(
        "gpu",
        slots=8,
        resources={"cpu": 8.0, "gpu": 1.0},
        labels={"zone": "eu"},
        queues=("default", "img"),
    )
    store.register_node(spec)
    nodes = {n.id: n for n in store.list_nodes()}
    n = nodes[spec.id]
    assert n.spec == spec and n.state is NodeState.LIVE and n.in_flight == 0
    jobs = [job(resources={"cpu": 2.0}), job(resources={"cpu": 1.0, "gpu": 1.0}), job()]
    store.submit(jobs)
    store.assign(leader(store), [Assignment(j.id, spec.id) for j in jobs])
    store.start_jobs(spec.id, 1, TTL)
    n = {n.id: n for n in store.list_nodes([NodeState.LIVE])}[spec.id]
    assert (n.assigned, n.running) == (2, 1)
    assert n.used == {"cpu": 3.0, "gpu": 1.0}
    store.set_node_state(spec.id, NodeState.DRAINING)
    assert store.list_nodes([NodeState.LIVE]) == []
    assert [x.state for x in store.list_nodes()] == [NodeState.DRAINING]


def test_assign_skips_taken_jobs_and_dead_nodes(store: Store) -> None:
    lease = leader(store)
    a, b = node("a"), node("b")
    store.register_node(a)
    store.register_node(b)
    j1, j2 = job(), job()
    store.submit([j1, j2])
    assert store.assign(lease, [Assignment(j1.id, a.id)]) == 1
    assert store.assign(lease, [Assignment(j1.id, b.id)]) == 0  # no longer pending
    store.set_node_state(b.id, NodeState.DRAINING)
    assert store.assign(lease, [Assignment(j2.id, b.id)]) == 0  # not live
    assert store.assign(lease, [Assignment(j2.id, "no-such-node")]) == 0
    rec = store.get_job(j1.id)
    assert rec is not None and rec.state is JobState.ASSIGNED and rec.node_id == a.id
    assert state_of(store, j2.id) is JobState.PENDING


def test_start_jobs_counts_attempt_sets_lease_and_token(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    jobs = [job(priority=p) for p in (1, 5, 3)]
    store.submit(jobs)
    store.assign(leader(store), [Assignment(j.id, spec.id) for j in jobs])
    other = node("other")
    store.register_node(other)
    assert store.start_jobs(other.id, 10, TTL) == []  # not its jobs
    started = store.start_jobs(spec.id, 2, TTL)
    assert [r.priority for r in started] == [5, 3]
    now = store.now()
    for r in started:
        assert r.state is JobState.RUNNING and r.attempts == 1 and r.token >= 1
        assert r.node_id == spec.id and r.started_at is not None
        assert r.lease_expires_at is not None and r.lease_expires_at > now + TTL - 5
    assert [r.priority for r in store.start_jobs(spec.id, 10, TTL)] == [1]
    assert store.start_jobs(spec.id, 10, TTL) == []
    assert store.start_jobs(spec.id, 0, TTL) == []


def test_complete_success_and_token_fencing(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    r1, r2 = run_on(store, spec, [job(), job()])
    ok = Outcome(r1.id, r1.token, OutcomeKind.SUCCEEDED, result='{"x": [1, 2]}')
    stale = Outcome(r2.id, r2.token + 1, OutcomeKind.SUCCEEDED, result="1")
    assert store.complete([ok, stale]) == [True, False]
    rec = store.get_job(r1.id)
    assert (
        rec is not None and rec.state is JobState.SUCCEEDED and rec.result_value() == {"x": [1, 2]}
    )
    assert rec.finished_at is not None and rec.node_id == spec.id
    assert store.complete([ok]) == [True]  # the same report again: idempotent
    assert store.complete([Outcome(r1.id, r1.token, OutcomeKind.FAILED, error="x")]) == [False]
    assert state_of(store, r2.id) is JobState.RUNNING


def test_failures_retry_with_delay_then_dead_letter(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job(retries=1)], lease)
    fail = Outcome(
        r.id,
        r.token,
        OutcomeKind.FAILED,
        error="ValueError: boom",
        traceback="tb1",
        retry_delay=0.3,
    )
    assert store.complete([fail]) == [True]
    rec = store.get_job(r.id)
    assert rec is not None and rec.state is JobState.RETRYING and rec.error == "ValueError: boom"
    assert rec.scheduled_at is not None and rec.scheduled_at > store.now()
    assert store.promote_due(lease, 10) == 0
    time.sleep(0.4)
    assert store.promote_due(lease, 10) == 1
    store.assign(lease, [Assignment(r.id, spec.id)])
    (again,) = store.start_jobs(spec.id, 1, TTL)
    assert again.attempts == 2 and again.token > r.token
    last = Outcome(
        again.id,
        again.token,
        OutcomeKind.FAILED,
        error="ValueError: again",
        traceback="tb2",
        retry_delay=0,
    )
    assert store.complete([last]) == [True]
    rec = store.get_job(r.id)
    assert rec is not None and rec.state is JobState.DEAD
    assert (rec.error, rec.traceback, rec.attempts) == ("ValueError: again", "tb2", 2)
    assert rec.finished_at is not None


def test_fatal_and_cancelled_outcomes_are_final(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    r1, r2 = run_on(store, spec, [job(retries=5), job(retries=5)])
    assert store.complete(
        [
            Outcome(r1.id, r1.token, OutcomeKind.FATAL, error="corrupt payload: x"),
            Outcome(r2.id, r2.token, OutcomeKind.CANCELLED, error="cancelled"),
        ]
    ) == [True, True]
    assert state_of(store, r1.id) is JobState.DEAD
    assert state_of(store, r2.id) is JobState.CANCELLED


def test_heartbeat_extends_leases_and_reports_lost_and_cancel(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    r1, r2 = run_on(store, spec, [job(), job()])
    before = store.get_job(r1.id)
    assert before is not None and before.lease_expires_at is not None
    time.sleep(0.05)
    reply = store.heartbeat(
        spec.id, [(r1.id, r1.token), (r2.id, r2.token + 7), ("ghost", 1)], TTL + 10
    )
    assert reply.alive and set(reply.lost) == {r2.id, "ghost"} and reply.cancel == ()
    after = store.get_job(r1.id)
    assert after is not None and after.lease_expires_at is not None
    assert after.lease_expires_at > before.lease_expires_at
    assert store.cancel(r1.id) is JobState.RUNNING
    reply = store.heartbeat(spec.id, [(r1.id, r1.token)], TTL)
    assert reply.cancel == (r1.id,)
    rec = store.get_job(r1.id)
    assert rec is not None and rec.cancel_requested


def test_heartbeat_of_a_node_reporting_no_running_job(store: Store) -> None:
    # PostgreSQL's idle path (heartbeat_idle): the node's row only; alive, heartbeat_at
    # moves on; a node declared dead or unknown is not alive.
    spec = node()
    store.register_node(spec)
    before = {n.spec.id: n.heartbeat_at for n in store.list_nodes()}[spec.id]
    time.sleep(0.05)
    reply = store.heartbeat(spec.id, [], TTL)
    assert reply.alive and reply.lost == () and reply.cancel == ()
    after = {n.spec.id: n.heartbeat_at for n in store.list_nodes()}[spec.id]
    assert after > before
    assert not store.heartbeat("no-such-node", [], TTL).alive
    store.set_node_state(spec.id, NodeState.DEAD)
    assert not store.heartbeat(spec.id, [], TTL).alive
    assert {n.spec.id: n.heartbeat_at for n in store.list_nodes()}[spec.id] == after


def test_list_nodes_shows_a_spec_registered_again(store: Store) -> None:
    # Stores that keep specs between calls (PostgreSQL, Redis) read a changed one again.
    spec = node()
    store.register_node(spec)
    assert {n.spec.id: n.spec for n in store.list_nodes()}[spec.id] == spec
    time.sleep(0.01)
    again = dataclasses.replace(spec, slots=spec.slots + 3, labels={"zone": "b"})
    store.register_node(again)
    assert {n.spec.id: n.spec for n in store.list_nodes()}[spec.id] == again


def test_reap_dead_node_requeues_assigned_and_retries_running(store: Store) -> None:
    lease = leader(store)
    dead, alive = node("dead"), node("alive")
    store.register_node(dead)
    store.register_node(alive)
    running = [job(retries=1), job(retries=0)]
    run_on(store, dead, running, lease)
    waiting = job(retries=0)
    store.submit([waiting])
    store.assign(lease, [Assignment(waiting.id, dead.id)])
    time.sleep(0.5)
    store.heartbeat(alive.id, [], TTL)
    report = store.reap(lease, 0.4)
    assert report.dead_nodes == (dead.id,)
    assert (report.requeued, report.retried, report.dead_jobs) == (1, 1, 1)
    w = store.get_job(waiting.id)
    assert w is not None and w.state is JobState.PENDING and w.attempts == 0 and w.node_id is None
    r0 = store.get_job(running[0].id)
    assert r0 is not None and r0.state is JobState.PENDING and r0.attempts == 1
    assert r0.error is not None and "lease" in r0.error
    r1 = store.get_job(running[1].id)
    assert r1 is not None and r1.state is JobState.DEAD and r1.finished_at is not None
    nodes = {n.id: n.state for n in store.list_nodes()}
    assert nodes == {dead.id: NodeState.DEAD, alive.id: NodeState.LIVE}
    assert not store.heartbeat(dead.id, [], TTL).alive
    assert store.start_jobs(dead.id, 10, TTL) == []
    assert store.reap(lease, 0.4) == type(report)()  # nothing more to do


def test_zombie_completion_is_refused_after_the_job_moved_on(store: Store) -> None:
    lease = leader(store)
    zombie, other = node("zombie"), node("other")
    store.register_node(zombie)
    (r,) = run_on(store, zombie, [job(retries=3)], lease)
    time.sleep(0.4)
    store.register_node(other)
    store.reap(lease, 0.3)
    store.assign(lease, [Assignment(r.id, other.id)])
    (retry,) = store.start_jobs(other.id, 1, TTL)
    assert retry.token > r.token and retry.attempts == 2
    late = Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result='"zombie"')
    assert store.complete([late]) == [False]
    assert store.complete(
        [Outcome(r.id, retry.token, OutcomeKind.SUCCEEDED, result='"retry"')]
    ) == [True]
    rec = store.get_job(r.id)
    assert rec is not None and rec.result_value() == "retry" and rec.node_id == other.id


def test_expired_job_lease_on_a_live_node_is_taken_back(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    store.submit([j := job(retries=2)])
    store.assign(lease, [Assignment(j.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, 0.2)
    time.sleep(0.3)
    store.heartbeat(spec.id, [], TTL)  # the node lives but no longer extends this job
    report = store.reap(lease, 60)
    assert report.dead_nodes == () and report.retried == 1
    assert state_of(store, r.id) is JobState.PENDING


def test_release_jobs_hands_back_without_counting(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()], lease)
    waiting = job()
    store.submit([waiting])
    store.assign(lease, [Assignment(waiting.id, spec.id)])
    w = store.get_job(waiting.id)
    assert w is not None
    released = store.release_jobs(spec.id, [(r.id, r.token), (w.id, w.token), (r.id, 999)])
    assert released == 2
    for jid in (r.id, waiting.id):
        rec = store.get_job(jid)
        assert rec is not None and rec.state is JobState.PENDING and rec.attempts == 0
        assert rec.node_id is None


def test_cancel_in_each_state(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    sched, pend, assigned = job(delay=60), job(), job()
    store.submit([sched, pend, assigned])
    store.assign(lease, [Assignment(assigned.id, spec.id)])
    assert store.cancel(sched.id) is JobState.CANCELLED
    assert store.cancel(pend.id) is JobState.CANCELLED
    assert store.cancel(assigned.id) is JobState.CANCELLED
    assert store.start_jobs(spec.id, 10, TTL) == []
    (r,) = run_on(store, spec, [job()], lease)
    assert store.cancel(r.id) is JobState.RUNNING
    store.complete([Outcome(r.id, r.token, OutcomeKind.CANCELLED, error="cancelled")])
    assert state_of(store, r.id) is JobState.CANCELLED
    assert store.cancel(r.id) is JobState.CANCELLED  # final: unchanged
    assert store.cancel("nope") is None
    assert store.count_jobs() == {("default", JobState.CANCELLED): 4}


def test_retry_dead_gives_fresh_attempts(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()])
    store.complete([Outcome(r.id, r.token, OutcomeKind.FAILED, error="E")])
    assert state_of(store, r.id) is JobState.DEAD
    assert store.retry_dead([r.id, "nope"]) == 1
    rec = store.get_job(r.id)
    assert rec is not None and rec.state is JobState.PENDING and rec.attempts == 0
    assert store.retry_dead([r.id]) == 0  # not dead any more


# ---- waiting and wake-ups ----------------------------------------------------------------
def _later(delay: float, fn: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_wait_for_results_returns_when_final(store: Store, connect: Callable[[], Store]) -> None:
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()])
    other = connect()
    t = _later(
        0.2, lambda: other.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="3")])
    )
    start = time.monotonic()
    done = store.wait_for_results([r.id], 5)
    t.join()
    assert [d.id for d in done] == [r.id] and done[0].result_value() == 3
    assert time.monotonic() - start < 2
    start = time.monotonic()
    assert store.wait_for_results(["missing"], 0.2) == []
    assert 0.15 < time.monotonic() - start < 2


def test_wait_for_assignments_wakes_on_assign(store: Store, connect: Callable[[], Store]) -> None:
    spec = node()
    store.register_node(spec)
    j = job()
    store.submit([j])
    sched = connect()
    lease = leader(sched)
    start = time.monotonic()
    store.wait_for_assignments(spec.id, 0.3)  # nothing assigned: waits the timeout out
    assert time.monotonic() - start >= 0.25
    t = _later(0.2, lambda: sched.assign(lease, [Assignment(j.id, spec.id)]))
    start = time.monotonic()
    store.wait_for_assignments(spec.id, 5)
    woke = time.monotonic() - start
    t.join()
    assert woke < 1.5
    assert len(store.start_jobs(spec.id, 5, TTL)) == 1


def test_wait_for_pending_wakes_on_submit(store: Store, connect: Callable[[], Store]) -> None:
    producer = connect()
    t = _later(0.2, lambda: producer.submit([job()]))
    start = time.monotonic()
    store.wait_for_pending(5)
    t.join()
    assert time.monotonic() - start < 1.5


# ---- concurrency ---------------------------------------------------------------------------
def test_only_one_of_many_concurrent_leaders(connect: Callable[[], Store]) -> None:
    stores = [connect() for _ in range(6)]
    got: list[Lease | None] = []
    barrier = threading.Barrier(len(stores))

    def grab(s: Store, i: int) -> None:
        barrier.wait()
        got.append(s.acquire_lease(SCHEDULER_LEASE, f"h{i}", 5))

    threads = [threading.Thread(target=grab, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([g for g in got if g is not None]) == 1


def test_concurrent_completions_with_one_token_change_the_job_once(
    connect: Callable[[], Store],
) -> None:
    s0 = connect()
    spec = node()
    s0.register_node(spec)
    started = run_on(s0, spec, [job() for _ in range(20)])
    stores = [connect() for _ in range(4)]
    results: list[list[bool]] = []
    barrier = threading.Barrier(len(stores))

    def finish(s: Store, n: int) -> None:
        barrier.wait()
        results.append(
            s.complete(
                [Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result=str(n)) for r in started]
            )
        )

    threads = [threading.Thread(target=finish, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The same report from one attempt: every copy is accepted (idempotent), one wrote it.
    assert results == [[True] * len(started)] * len(stores)
    finished = s0.get_jobs([r.id for r in started])
    assert all(rec.state is JobState.SUCCEEDED for rec in finished)
    for rec in finished:
        (attempt,) = s0.job_attempts(rec.id)
        assert attempt.ended_at == rec.finished_at and attempt.outcome == "succeeded"
        assert rec.result is not None


# ---- odds and ends ---------------------------------------------------------------------------
def test_stats_roundtrip(store: Store) -> None:
    assert store.get_stats("scheduler") is None
    store.put_stats("scheduler", {"leader": "a", "rate": 1.5, "unplaceable": [{"n": 1}]})
    store.put_stats("scheduler", {"leader": "b"})
    assert store.get_stats("scheduler") == {"leader": "b"}


def test_put_stats_once_has_exactly_one_winner(store: Store, connect: Callable[[], Store]) -> None:
    # The first distinct document wins; a repeat of the winner's data still reports True
    # (a retried call), anyone else's data reports False and changes nothing.
    assert store.put_stats_once("reply:j1", {"by": "a", "n": [1, 2]})
    assert store.put_stats_once("reply:j1", {"n": [1, 2], "by": "a"})
    assert not store.put_stats_once("reply:j1", {"by": "b", "n": [1, 2]})
    assert store.get_stats("reply:j1") == {"by": "a", "n": [1, 2]}
    # put_stats_once never replaces a document written by put_stats.
    store.put_stats("reply:j2", {"by": "plain"})
    assert not store.put_stats_once("reply:j2", {"by": "c"})
    assert store.get_stats("reply:j2") == {"by": "plain"}
    # Racing processes (each its own connection): one winner per name.
    stores = [connect() for _ in range(4)]
    names = [f"race:{i}" for i in range(20)]
    wins: dict[str, list[int]] = {name: [] for name in names}
    start = threading.Barrier(len(stores))

    def claim(index: int) -> None:
        start.wait()
        for name in names:
            if stores[index].put_stats_once(name, {"by": index}):
                wins[name].append(index)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in names:
        assert len(wins[name]) == 1, (name, wins[name])
        assert store.get_stats(name) == {"by": wins[name][0]}


def test_prune_deletes_old_claims_and_keeps_other_documents(store: Store) -> None:
    claim = f"{CLAIM_PREFIX}reply:j1"
    assert store.put_stats_once(claim, {"by": "a"})
    assert store.put_stats_once("reply:plain", {"by": "a"})  # not a claim name
    store.put_stats("scheduler", {"leader": "a"})
    store.prune(older_than=3600)  # written just now: kept
    assert store.get_stats(claim) == {"by": "a"}
    store.prune(older_than=-60)  # everything is "old" now
    assert store.get_stats(claim) is None
    assert store.get_stats("reply:plain") == {"by": "a"}
    assert store.get_stats("scheduler") == {"leader": "a"}
    assert store.put_stats_once(claim, {"by": "b"})  # the name is free again


def test_prune_deletes_only_old_final_jobs(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()])
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")])
    keep = job()
    store.submit([keep])
    assert store.prune(3600) == 0
    time.sleep(0.2)
    assert store.prune(0.1) == 1
    assert store.get_job(r.id) is None and store.get_job(keep.id) is not None


def test_store_clock_is_sane(store: Store) -> None:
    a = store.now()
    time.sleep(0.05)
    b = store.now()
    assert 0.02 < b - a < 2
    assert abs(a - time.time()) < 60


def test_complete_and_start_reports_then_claims(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()], lease)
    nxt = [job(priority=1), job(priority=4)]
    store.submit(nxt)
    store.assign(lease, [Assignment(j.id, spec.id) for j in nxt])
    done = Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="7")
    stale = Outcome(r.id, r.token + 5, OutcomeKind.SUCCEEDED, result="8")
    accepted, started = fast.complete_and_start(store, [done, stale], spec.id, 1, TTL)
    assert accepted == [True, False]
    assert [s.priority for s in started] == [4] and started[0].state is JobState.RUNNING
    rec = store.get_job(r.id)
    assert rec is not None and rec.result_value() == 7
    accepted, started = fast.complete_and_start(store, [], spec.id, 5, TTL)
    assert accepted == [] and [s.priority for s in started] == [1]
    assert fast.complete_and_start(store, [], spec.id, 0, TTL) == ([], [])


def test_duplicate_ids_are_refused_and_nothing_is_stored(store: Store) -> None:
    first = job()
    store.submit([first])
    fresh = job()
    with pytest.raises(SubmitError):
        store.submit(
            [fresh, job(), NewJob(id=first.id, task="t", queue="default", payload=first.payload)]
        )
    assert store.get_job(fresh.id) is None
    assert store.count_jobs() == {("default", JobState.PENDING): 1}


def test_a_job_whose_cancel_was_requested_never_runs_again(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    failed, released, lost = run_on(
        store, spec, [job(retries=3), job(retries=3), job(retries=3)], lease
    )
    for r in (failed, released, lost):
        assert store.cancel(r.id) is JobState.RUNNING
    store.complete([Outcome(failed.id, failed.token, OutcomeKind.FAILED, error="E", retry_delay=0)])
    assert state_of(store, failed.id) is JobState.CANCELLED
    assert store.release_jobs(spec.id, [(released.id, released.token)]) == 1
    assert state_of(store, released.id) is JobState.CANCELLED
    time.sleep(0.4)
    store.reap(lease, 0.3)
    assert state_of(store, lost.id) is JobState.CANCELLED
    assert store.pending_jobs(10) == []


def test_placement_snapshot_promotes_lists_and_sizes_the_page(store: Store) -> None:
    lease = leader(store)
    spec = NodeSpec(id="n-snap", name="n", slots=2, prefetch=1)
    store.register_node(spec)
    soon = job(delay=0.01)
    store.submit([soon, *[job() for _ in range(9)]])
    time.sleep(0.05)
    snap = fast.placement_snapshot(store, lease, 100, 1000, 2, False)
    assert snap.promoted == 1 and [n.id for n in snap.nodes] == [spec.id]
    assert snap.page_size == 3 and len(snap.pending) == 3  # free room 3, within [2, 1000]
    assert snap.pending == store.pending_jobs(3)
    store.assign(lease, [Assignment(p.id, spec.id) for p in snap.pending])
    assert fast.placement_snapshot(store, lease, 100, 1000, 2, False).pending == []  # no room
    assert len(fast.placement_snapshot(store, lease, 100, 5, 2, True).pending) == 5  # census
    stale = Lease(lease.name, lease.holder, lease.token + 1, lease.expires_at, 0.0)
    with pytest.raises(LeaseLost):
        fast.placement_snapshot(store, stale, 100, 1000, 2, False)


def test_reserved_slots_place_a_plain_job_where_the_store_offers_them(store: Store) -> None:
    """``reserve_slots`` is safe on every store: where it is offered (``reserves_slots``)
    a plain job submitted while nothing is pending is assigned to a reserved live node;
    elsewhere it waits for placement as usual. The next snapshot drops the reservations."""
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    fast.reserve_slots(store, lease, {"default": [spec.id]})
    first, second = job(), job()
    store.submit([first])
    store.submit([second])  # the one slot was used, or there was none
    got = {r.id: r for r in store.get_jobs([first.id, second.id])}
    if fast.reserves_slots(store):
        assert (got[first.id].state, got[first.id].node_id) == (JobState.ASSIGNED, spec.id)
        assert got[first.id].token > 0
        assert [r.id for r in store.start_jobs(spec.id, 4, TTL)] == [first.id]
    else:
        assert got[first.id].state is JobState.PENDING
    assert got[second.id].state is JobState.PENDING
    store.cancel(second.id)
    fast.reserve_slots(store, lease, {"default": [spec.id]})
    fast.placement_snapshot(store, lease, 100, 100, 10, False)  # drops them
    third = job()
    store.submit([third])
    assert store.get_job(third.id).state is JobState.PENDING  # type: ignore[union-attr]
    stale = Lease(lease.name, lease.holder, lease.token + 1, lease.expires_at, 0.0)
    if fast.reserves_slots(store):
        with pytest.raises(LeaseLost):
            fast.reserve_slots(store, stale, {"default": [spec.id]})
