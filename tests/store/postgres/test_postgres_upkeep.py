"""Leases and fencing, pruning, the server clock, forked children and lock ordering on
PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from rota.core.errors import LeaseLost  # noqa: E402
from rota.core.model import Assignment, NodeState  # noqa: E402
from rota.core.outcomes import Outcome, OutcomeKind  # noqa: E402
from rota.core.states import JobState  # noqa: E402
from tests.store.postgres.helpers import new_job, node_spec, open_store  # noqa: E402

# ---- leases and fencing -------------------------------------------------------------


def test_lease_tokens_grow_and_fenced_calls_check_them(store: Any) -> None:
    first = store.acquire_lease("scheduler", "a", 0.3)
    assert first.token == 1
    assert store.acquire_lease("scheduler", "b", 10) is None
    renewed = store.acquire_lease("scheduler", "a", 0.3)
    assert renewed.token == 1 and renewed.expires_at >= first.expires_at
    time.sleep(0.4)
    calls: list[Callable[[], object]] = [
        lambda: store.promote_due(first, 10),
        lambda: store.reap(first, 30),
        lambda: store.assign(first, []),
    ]
    for call in calls:
        with pytest.raises(LeaseLost):
            call()
    second = store.acquire_lease("scheduler", "b", 10)
    assert second.token == 2
    store.release_lease(first)  # not held any more: no effect
    assert store.get_lease("scheduler") == second
    store.release_lease(second)
    assert store.get_lease("scheduler") is None
    third = store.acquire_lease("scheduler", "a", 10)
    assert third.token == 3  # a released lease still gives the next holder a new token
    assert store.promote_due(third, 10) == 0
    with pytest.raises(LeaseLost):
        store.promote_due(second, 10)


def test_a_stale_leader_cannot_assign(store: Any) -> None:
    store.register_node(node_spec("n1"))
    job = new_job()
    store.submit([job])
    stale = store.acquire_lease("scheduler", "old", 0.2)
    time.sleep(0.3)
    store.acquire_lease("scheduler", "new", 10)
    with pytest.raises(LeaseLost):
        store.assign(stale, [Assignment(job.id, "n1")])
    assert store.get_job(job.id).state is JobState.PENDING


# ---- prune --------------------------------------------------------------------------


def test_prune_deletes_only_final_jobs_and_gone_nodes_past_retention(
    store: Any, admin: Any
) -> None:
    old = [new_job() for _ in range(3)]
    recent, waiting = new_job(), new_job(delay=3600)
    store.submit([*old, recent, waiting])
    for job in [*old, recent]:
        store.cancel(job.id)
    store.register_node(node_spec("gone"))
    store.register_node(node_spec("here"))
    store.set_node_state("gone", NodeState.STOPPED)
    admin.execute(
        "UPDATE jobs SET finished_at = finished_at - 7200, created_at = created_at - 7200 "
        "WHERE id = ANY(%s)",
        [[j.id for j in old]],
    )
    admin.execute("UPDATE nodes SET gone_at = gone_at - 7200 WHERE id = 'gone'")
    assert store.prune(3600) == 3
    assert {r.id for r in store.list_jobs()} == {recent.id, waiting.id}
    assert [n.id for n in store.list_nodes()] == ["here"]
    assert store.prune(3600) == 0


def test_prune_works_in_batches(store: Any, admin: Any) -> None:
    from rota.store.postgres import store as postgres

    n = postgres.PRUNE_BATCH * 2 + 7
    admin.execute(
        "INSERT INTO jobs (id, task, queue, payload, state, created_at, finished_at) "
        "SELECT 'old-' || g, 't', 'default', '{}', 'dead', 0, 0 FROM generate_series(1, %s) g",
        [n],
    )
    assert store.prune(60) == n
    assert store.count_jobs() == {}


# ---- clock --------------------------------------------------------------------------


def test_times_come_from_the_server_clock(store: Any, admin: Any) -> None:
    (server,) = admin.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert abs(store.now() - server) < 1
    job = new_job(delay=30)
    store.submit([job])
    record = store.get_job(job.id)
    assert record.state is JobState.SCHEDULED
    assert record.scheduled_at == pytest.approx(record.created_at + 30)
    assert abs(record.created_at - server) < 1


def test_a_forked_child_opens_its_own_connections(store: Any) -> None:
    import os

    store.submit([new_job()])
    store.wait_for_pending(0)
    backends = set(store._pool._pool) | {store._listen_conn}
    pids = {conn.info.backend_pid for conn in backends}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            store.submit([new_job()])
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connections were neither used nor closed by the child.
    assert all(not conn.closed and not conn.broken for conn in backends)
    assert store._run(lambda conn: conn.info.backend_pid) in pids
    assert store._listen_conn is not None and store._listen_conn.info.backend_pid in pids
    assert len(store.list_jobs()) == 2
    store.wait_for_pending(0)


def test_overlapping_batches_in_opposite_orders_do_not_deadlock(url: str, store: Any) -> None:
    """Batch statements lock their rows in id order, so two callers completing the same
    jobs in opposite orders wait for each other instead of deadlocking (which PostgreSQL
    would break after a second by failing one of them)."""
    store.register_node(node_spec("n1"))
    lease = store.acquire_lease("scheduler", "s", 60)
    jobs = [new_job() for _ in range(300)]
    store.submit(jobs)
    store.assign(lease, [Assignment(j.id, "n1") for j in jobs])
    running = store.start_jobs("n1", 300, 60)
    others = [open_store(url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def finish(s: Any, batch: list[Any]) -> None:
        barrier.wait()
        try:
            s.heartbeat("n1", [(r.id, r.token) for r in batch], 60)
            results.append(
                s.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED) for r in batch])
            )
        except Exception as exc:  # pragma: no cover - the failure being tested
            results.append(exc)

    try:
        threads = [
            threading.Thread(target=finish, args=(others[0], running)),
            threading.Thread(target=finish, args=(others[1], running[::-1])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in others:
            s.close()
    assert all(isinstance(r, list) for r in results), results
    accepted = [sum(pair) for pair in zip(results[0], reversed(results[1]), strict=True)]
    # The same report twice is one report: both copies are accepted, the job ends once.
    assert sorted(set(accepted)) == [2]  # whichever order the two ran in
    assert store.count_jobs() == {("default", JobState.SUCCEEDED): 300}
