"""The store contract for the allocation fields (issue 17): ``alloc`` round-trips through
submit and every read, pending jobs carry ``alloc``, ``timeout`` and ``enqueued_at``, and
``running_jobs`` gives the work on the nodes; ``preempt`` sends jobs back to pending
without counting an attempt. Every store must pass every test here."""

from __future__ import annotations

import time

import pytest

from rota.core.errors import LeaseLost
from rota.core.model import AllocSpec, Assignment, JobRecord, NewJob, NodeSpec
from rota.core.outcomes import CutShort, Outcome, OutcomeKind
from rota.core.states import JobState
from rota.store import Store
from rota.store import fast_paths as fast
from tests.store.contract.test_fast_paths import claims_granted
from tests.store.contract.test_store_contract import TTL, job, leader, node

SPEC = AllocSpec(tenant="acme", preemptible=True, aging=2.5)


def with_alloc(new: NewJob, spec: AllocSpec = SPEC) -> NewJob:
    new.alloc = spec
    return new


def test_alloc_round_trips_through_submit_and_reads(store: Store) -> None:
    plain, tagged = job("a"), with_alloc(job("b", priority=3))
    flow = with_alloc(job("c", unique_key="k1"), AllocSpec(tenant="beta"))  # flow insert
    store.submit([plain, tagged, flow])
    got = {r.id: r for r in store.get_jobs([plain.id, tagged.id, flow.id])}
    assert got[plain.id].alloc == AllocSpec()
    assert got[tagged.id].alloc == SPEC
    assert got[flow.id].alloc == AllocSpec(tenant="beta")
    for rec in got.values():
        assert rec.preempted_at is None and rec.preemptions == 0
    listed = {r.id: r.alloc for r in store.list_jobs(state=JobState.PENDING)}
    assert listed == {plain.id: AllocSpec(), tagged.id: SPEC, flow.id: AllocSpec(tenant="beta")}
    assert got[tagged.id].to_dict()["alloc"] == {
        "tenant": "acme",
        "preemptible": True,
        "aging": 2.5,
    }


def test_pending_jobs_carry_alloc_timeout_and_enqueued_at(store: Store) -> None:
    before = store.now()
    plain, tagged = job("a"), with_alloc(job("b", priority=3, timeout=42.0))
    store.submit([plain, tagged])
    after = store.now()
    page = store.pending_jobs(10)
    assert [p.id for p in page] == [tagged.id, plain.id]
    assert page[0].alloc == SPEC and page[0].timeout == 42.0
    assert page[1].alloc == AllocSpec() and page[1].timeout is None
    # a job with an alloc spec carries when it became pending (aging reads it; a plain
    # job's may be 0 on stores that keep it only when asked)
    assert before - 1.0 <= page[0].enqueued_at <= after + 1.0
    assert page[1].enqueued_at == 0.0 or before - 1.0 <= page[1].enqueued_at <= after + 1.0
    # the next page (after a cursor) carries them too
    (second,) = store.pending_jobs(10, after=(page[0].priority, page[0].seq))
    assert second.id == plain.id and second.enqueued_at == page[1].enqueued_at


def test_started_job_keeps_its_alloc(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    tagged = with_alloc(job("b"))
    store.submit([tagged])
    assert store.assign(leader(store), [Assignment(tagged.id, spec.id)]) == 1
    (rec,) = store.start_jobs(spec.id, 1, TTL)
    assert rec.alloc == SPEC and rec.preemptions == 0


def test_running_jobs_give_the_work_on_the_nodes(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    a = with_alloc(job("a", resources={"gpu": 2.0}))
    b = job("b", queue="q2")
    c = job("c")  # stays pending
    store.submit([a, b, c])
    assert store.assign(leader(store), [Assignment(a.id, spec.id), Assignment(b.id, spec.id)]) == 2
    store.start_jobs(spec.id, 1, TTL)  # one of the two runs, the other stays assigned
    running = {r.id: r for r in store.running_jobs()}
    assert set(running) == {a.id, b.id}
    assert running[a.id].alloc == SPEC and running[a.id].resources == {"gpu": 2.0}
    assert running[a.id].node_id == spec.id and running[b.id].queue == "q2"
    assert running[b.id].alloc == AllocSpec()


# ---- preemption ---------------------------------------------------------------------------
def started(store: Store, spec: NodeSpec, new: NewJob) -> JobRecord:
    store.submit([new])
    assert store.assign(leader(store), [Assignment(new.id, spec.id)]) == 1
    (rec,) = store.start_jobs(spec.id, 1, TTL)
    return rec


def test_preempting_an_assigned_job_puts_it_back_at_once(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    victim = with_alloc(job("v"), AllocSpec(preemptible=True))
    store.submit([victim])
    lease = leader(store)
    assert store.assign(lease, [Assignment(victim.id, spec.id)]) == 1
    assert store.preempt(lease, [(victim.id, "for job X")]) == 1
    rec = store.get_job(victim.id)
    assert rec is not None and rec.state is JobState.PENDING and rec.node_id is None
    assert rec.preemptions == 1 and rec.preempted_at is not None and rec.error == "for job X"
    assert [p.id for p in store.pending_jobs(10)] == [victim.id]
    assert store.running_jobs() == []
    assert store.preempt(lease, [(victim.id, "again")]) == 0  # pending: skipped


def test_a_preempted_running_job_comes_back_without_counting_the_attempt(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    victim = with_alloc(job("v", retries=0, priority=1), AllocSpec(preemptible=True, aging=5.0))
    store.submit([victim])
    (queued,) = store.pending_jobs(10)
    assert store.assign(leader(store), [Assignment(victim.id, spec.id)]) == 1
    (rec,) = store.start_jobs(spec.id, 1, TTL)
    assert store.preempt(leader(store), [(victim.id, "preempted by job X")]) == 1
    (running,) = store.running_jobs()
    assert running.stopping and running.preempted_at is not None
    assert store.heartbeat(spec.id, [(rec.id, rec.token)], TTL).cancel == (victim.id,)
    out = Outcome(rec.id, rec.token, OutcomeKind.CANCELLED, cut_short=CutShort.CANCELLED)
    assert store.complete([out]) == [True]
    assert store.complete([out]) == [True]  # a retried report changes nothing
    back = store.get_job(victim.id)
    assert back is not None and back.state is JobState.PENDING
    assert back.attempts == 0 and back.max_attempts == 1  # the attempt is not counted
    assert back.preemptions == 1 and back.error == "preempted by job X"
    assert not back.cancel_requested and back.node_id is None
    (attempt,) = store.job_attempts(victim.id)
    assert attempt.cut_short == CutShort.PREEMPTED.value and attempt.ended_at is not None
    (page,) = store.pending_jobs(10)
    assert page.id == victim.id and page.alloc == victim.alloc
    assert page.enqueued_at == queued.enqueued_at  # it keeps its aged priority
    # it runs again, to success, under a new token
    assert store.assign(leader(store), [Assignment(victim.id, spec.id)]) == 1
    (again,) = store.start_jobs(spec.id, 1, TTL)
    assert again.attempts == 1 and again.token > rec.token
    assert store.heartbeat(spec.id, [(again.id, again.token)], TTL).cancel == ()
    ok = Outcome(again.id, again.token, OutcomeKind.SUCCEEDED, result='"ok"')
    assert store.complete([ok]) == [True]
    done = store.get_job(victim.id)
    assert done is not None and done.state is JobState.SUCCEEDED and done.preemptions == 1


def test_a_cancel_during_a_preemption_is_a_cancel(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    victim = with_alloc(job("v"), AllocSpec(preemptible=True))
    rec = started(store, spec, victim)
    assert store.preempt(leader(store), [(victim.id, "for X")]) == 1
    assert store.cancel(victim.id) is JobState.RUNNING
    out = Outcome(rec.id, rec.token, OutcomeKind.CANCELLED, cut_short=CutShort.CANCELLED)
    assert store.complete([out]) == [True]
    gone = store.get_job(victim.id)
    assert gone is not None and gone.state is JobState.CANCELLED and gone.preemptions == 0


def test_a_job_released_during_its_preemption_goes_back_to_pending(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    victim = with_alloc(job("v"), AllocSpec(preemptible=True))
    rec = started(store, spec, victim)
    assert store.preempt(leader(store), [(victim.id, "for X")]) == 1
    assert store.release_jobs(spec.id, [(rec.id, rec.token)]) == 1
    back = store.get_job(victim.id)
    assert back is not None and back.state is JobState.PENDING and not back.cancel_requested
    assert back.attempts == 0 and back.preemptions == 1


def test_preempt_is_fenced(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    victim = with_alloc(job("v"), AllocSpec(preemptible=True))
    started(store, spec, victim)
    old = leader(store, ttl=0.2)
    time.sleep(0.4)
    leader(store, holder="sched-b")
    with pytest.raises(LeaseLost):
        store.preempt(old, [(victim.id, "stale")])
    rec = store.get_job(victim.id)
    assert rec is not None and not rec.cancel_requested and rec.preempted_at is None


def test_a_claim_stops_at_a_job_with_an_alloc_spec(store: Store) -> None:
    """Tenants, aging and preemption are the leader's to weigh: no node claims such a
    job itself, nor overtakes it."""
    claims_granted(store)
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    fast.grant_claims(store, lease, {spec.id: ("default",)})
    plain, tagged, later = job(priority=3), with_alloc(job(priority=2)), job()
    store.submit([plain, tagged, later])
    assert [r.id for r in store.start_jobs(spec.id, 4, TTL)] == [plain.id]
    assert [p.id for p in store.pending_jobs(10)] == [tagged.id, later.id]
