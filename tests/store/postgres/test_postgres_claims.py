"""Placement and claims on PostgreSQL: the pending query uses its partial index, the cursor
covers extreme priorities, and SKIP LOCKED claims across processes never double-book."""

from __future__ import annotations

import multiprocessing
import re
import time
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from rota.core.model import (  # noqa: E402
    Assignment,
    Lease,
)
from rota.core.states import JobState  # noqa: E402
from tests.store.postgres.helpers import new_job, node_spec, open_store  # noqa: E402

# ---- the pending index --------------------------------------------------------------


def test_pending_query_uses_the_partial_index(store: Any, admin: Any) -> None:
    """With 200k finished rows (and 1000 pending) a page of the pending query is an Index
    Scan on ``jobs_pending_idx`` whose condition is the cursor: no Seq Scan on jobs, no
    Sort, nothing read of the finished rows. ``EXPLAIN ANALYZE`` on PostgreSQL 15 (first
    page, then a later page; the generic plan of the prepared statement is the same)::

        Limit  (cost=0.28..189.29 rows=50 width=54) (actual time=0.012..0.037 rows=50 loops=1)
          ->  Index Scan using jobs_pending_idx on jobs
                (cost=0.28..1349.84 rows=357 width=54) (actual time=0.011..0.033 rows=50 loops=1)
                Index Cond: (ROW((- (priority)::bigint), seq)
                             > ROW('-4611686018427387904'::bigint, '0'::bigint))
        Execution Time: 0.059 ms

        Limit  (cost=0.28..189.29 rows=50 width=54) (actual time=0.015..0.042 rows=50 loops=1)
          ->  Index Scan using jobs_pending_idx on jobs
                (cost=0.28..1349.84 rows=357 width=54) (actual time=0.015..0.038 rows=50 loops=1)
                Index Cond: (ROW((- (priority)::bigint), seq) > ROW('-3'::bigint, '200250'::bigint))
        Execution Time: 0.058 ms

    (A page larger than the whole pending set may instead be planned as a Bitmap Index Scan
    of the same partial index plus a sort of the pending rows: still never a Seq Scan.)
    """
    from rota.store.postgres.queries import query

    t0 = time.perf_counter()
    admin.execute(
        "INSERT INTO jobs (id, task, queue, payload, state, created_at, finished_at) "
        "SELECT 'done-' || g, 'tests.noop', 'default', '{}', 'succeeded', 0, 0 "
        "FROM generate_series(1, 200000) AS g"
    )
    assert time.perf_counter() - t0 < 30
    pending = [new_job(priority=i % 5) for i in range(1000)]
    store.submit(pending)
    admin.execute("ANALYZE jobs")

    seen = store.pending_jobs(50)
    assert [(j.priority, j.seq) for j in seen] == sorted(
        ((j.priority, j.seq) for j in seen), key=lambda k: (-k[0], k[1])
    )
    cursor = (seen[-1].priority, seen[-1].seq)
    while page := store.pending_jobs(300, after=(seen[-1].priority, seen[-1].seq)):
        seen += page
    assert [j.id for j in seen] == [
        j.id
        for j in sorted(store.get_jobs([p.id for p in pending]), key=lambda r: (-r.priority, r.seq))
    ]

    for neg_priority, seq in [(-(2**62), 0), (-cursor[0], cursor[1])]:
        params = {"neg_priority": neg_priority, "seq": seq, "limit": 50}
        plan = "\n".join(
            row[0] for row in admin.execute(("EXPLAIN " + query("pending_jobs")).encode(), params)
        )
        assert re.search(r"Index (Only )?Scan using jobs_pending_idx on jobs", plan), plan
        assert "Index Cond: (ROW(" in plan, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
    # Whatever the page size, the finished rows are never read.
    params = {"neg_priority": -(2**62), "seq": 0, "limit": 5000}
    plan = "\n".join(
        row[0] for row in admin.execute(("EXPLAIN " + query("pending_jobs")).encode(), params)
    )
    assert "jobs_pending_idx" in plan and "Seq Scan" not in plan, plan


def test_pending_cursor_covers_extreme_priorities(store: Any) -> None:
    low, high = -(2**31), 2**31 - 1
    jobs = [new_job(priority=p) for p in (0, low, high, 5, -5, high, low)]
    store.submit(jobs)
    seen = []
    after = None
    while True:
        page = store.pending_jobs(2, after=after)
        if not page:
            break
        seen += page
        after = (page[-1].priority, page[-1].seq)
    assert [j.priority for j in seen] == [high, high, 5, 0, -5, low, low]
    assert len({j.id for j in seen}) == len(jobs)


# ---- claims across processes --------------------------------------------------------


def _assign_in_process(url: str, lease: tuple[Any, ...], job_ids: list[str], node_id: str,
                       barrier: Any, out: Any) -> None:  # fmt: skip
    store = open_store(url)
    try:
        barrier.wait()
        placed = 0
        for i in range(0, len(job_ids), 40):
            batch = [Assignment(job_id, node_id) for job_id in job_ids[i : i + 40]]
            placed += store.assign(Lease(*lease), batch)
        out.put(placed)
    finally:
        store.close()


def _start_in_process(url: str, node_ids: list[str], barrier: Any, out: Any) -> None:
    store = open_store(url)
    try:
        barrier.wait()
        started: list[tuple[str, int]] = []
        for node_id in node_ids:
            while batch := store.start_jobs(node_id, 7, 60):
                started += [(j.id, j.token) for j in batch]
        out.put(started)
    finally:
        store.close()


def _run_processes(target: Any, args_list: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(args_list)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for args in args_list]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_skip_locked_claims_never_hand_a_job_out_twice(url: str, store: Any) -> None:
    n_jobs, n_procs = 600, 4
    jobs = [new_job(priority=i % 3) for i in range(n_jobs)]
    store.submit(jobs)
    nodes = [f"node-{i}" for i in range(n_procs)]
    for node_id in nodes:
        store.register_node(node_spec(node_id))
    lease = store.acquire_lease("scheduler", "test", 60)
    fields = (lease.name, lease.holder, lease.token, lease.expires_at, lease.acquired_at)
    ids = [j.id for j in jobs]

    # Every process tries to place every job (on its own node) at the same time.
    placed = _run_processes(
        _assign_in_process, [(url, fields, ids, nodes[p]) for p in range(n_procs)]
    )
    assert sum(placed) == n_jobs
    records = store.get_jobs(ids)
    assert all(r.state is JobState.ASSIGNED and r.token == 1 for r in records)
    by_node = {n.id: n.assigned for n in store.list_nodes()}
    assert sum(by_node.values()) == n_jobs

    # Every process starts jobs of every node at the same time, in a different order.
    started = _run_processes(
        _start_in_process,
        [(url, nodes[p:] + nodes[:p]) for p in range(n_procs)],
    )
    flat = [job_id for batch in started for job_id, _ in batch]
    assert len(flat) == n_jobs
    assert len(set(flat)) == n_jobs
    records = store.get_jobs(ids)
    assert all(r.state is JobState.RUNNING and r.attempts == 1 for r in records)


# ---- complete_and_start and the scheduler's wake-up ----------------------------------


def test_a_refilled_node_does_not_wake_the_scheduler(store: Any, admin: Any) -> None:
    """``complete_and_start`` NOTIFYs the scheduler's channel only when what is pending
    needs it: not when every outcome is a plain success and the first pending job left is
    one the node claims itself; yes when that job needs placement, and on a plain
    ``complete``."""
    from rota.core.outcomes import Outcome, OutcomeKind
    from rota.store import fast_paths as fast

    admin.execute(f'LISTEN "{store.pending_channel}"')

    def woken() -> bool:
        admin.execute("SELECT 1")  # notifications arrive with the next result
        return bool(list(admin.notifies(timeout=0.2, stop_after=1)))

    lease = store.acquire_lease("scheduler", "s", 60)
    spec = node_spec("n1", slots=1)
    store.register_node(spec)
    fast.grant_claims(store, lease, {spec.id: ("default",)})
    store.submit([new_job(priority=2), new_job(priority=2), new_job(priority=2)])
    (cur,) = store.start_jobs(spec.id, 1, 60)
    needy = new_job(priority=1, resources={"cpu": 1.0})
    store.submit([needy])
    while woken():  # the submits' own notifications
        pass

    def finish(job: Any) -> Any:
        done = Outcome(job.id, job.token, OutcomeKind.SUCCEEDED, result="1")
        accepted, started = fast.complete_and_start(store, [done], spec.id, 1, 60)
        assert accepted == [True]
        return started[0] if started else None

    cur = finish(cur)  # next: a plain job of the node's queue
    assert cur is not None and not woken()
    cur = finish(cur)  # claimed the last plain one; the job left needs placement
    assert cur is not None and woken()
    assert finish(cur) is None and woken()  # the head is not claimable: wake
    (placed,) = store.pending_jobs(10)
    assert placed.id == needy.id
    assert store.assign(lease, [Assignment(needy.id, spec.id)]) == 1
    (last,) = store.start_jobs(spec.id, 1, 60)
    assert store.complete([Outcome(last.id, last.token, OutcomeKind.SUCCEEDED)]) == [True]
    assert woken()  # a plain complete always wakes it
