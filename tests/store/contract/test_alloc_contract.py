"""The store contract for the allocation fields (issue 17): ``alloc`` round-trips through
submit and every read, pending jobs carry ``alloc``, ``timeout`` and ``enqueued_at``, and
``running_jobs`` gives the work on the nodes. Every store must pass every test here."""

from __future__ import annotations

from rota.core.model import AllocSpec, Assignment, NewJob
from rota.core.states import JobState
from rota.store import Store
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
